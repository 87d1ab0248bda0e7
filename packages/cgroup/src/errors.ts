/** The cgroup package's errors: filesystem failures on cgroup files and the checkpointing refusal. */
import { DroverError, ErrorCode } from '@drover/common';

/** A cgroup file operation failed; `path`, `op` and `errno` say which and why. */
export class CgroupError extends DroverError {
  /** The cgroup file or directory involved. */
  readonly path: string;
  /** What was being done (`mkdir`, `write`, `read`, `rmdir`, ...). */
  readonly op: string;
  /** The errno name (`EBUSY`, `ENOENT`, ...) when the kernel gave one. */
  readonly errno: string | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    fields: {
      path: string;
      op: string;
      errno?: string | undefined;
      cause?: unknown;
      retryable?: boolean;
    },
  ) {
    super(code, message, {
      cause: fields.cause,
      retryable: fields.retryable ?? false,
      details: { path: fields.path, op: fields.op, errno: fields.errno },
    });
    this.path = fields.path;
    this.op = fields.op;
    this.errno = fields.errno;
  }
}

/**
 * Thawing (or a second checkpoint freeze) was refused because a checkpoint holds the job frozen
 * (the linux-cr CHECKPOINTING freezer state). Code `CHECKPOINTING`.
 */
export class CheckpointingError extends DroverError {
  /** The job whose cgroup is held. */
  readonly jobId: string;

  constructor(jobId: string, message: string, holder?: Record<string, unknown>) {
    super(ErrorCode.Checkpointing, message, { details: { jobId, holder } });
    this.jobId = jobId;
  }
}

/** The errno name of a Node fs error, if any. */
export function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Map a Node fs error on a cgroup file to a CgroupError: ENOENT (no such cgroup) and ESRCH (no such
 * process, from a cgroup.procs write) become NOT_FOUND, anything else CGROUP.
 */
export function cgroupFsError(err: unknown, op: string, path: string): CgroupError {
  const errno = errnoOf(err);
  const code = errno === 'ENOENT' || errno === 'ESRCH' ? ErrorCode.NotFound : ErrorCode.Cgroup;
  const why = err instanceof Error ? err.message : String(err);
  return new CgroupError(code, `cgroup ${op} ${path} failed: ${why}`, {
    path,
    op,
    errno,
    cause: err,
    retryable: errno === 'EBUSY' || errno === 'EAGAIN',
  });
}

/**
 * A scheduled cut's instant (`atMs`, this host's clock) had passed by `lateMs` when the freeze
 * could be armed: nothing was frozen. Code `CUT_MISSED`, retryable (with a later instant).
 */
export class CutMissedError extends DroverError {
  readonly atMs: number;
  readonly lateMs: number;

  constructor(atMs: number, lateMs: number) {
    super(
      ErrorCode.CutMissed,
      `the cut at ${atMs.toFixed(1)} had passed ${lateMs.toFixed(1)} ms before it could be armed`,
      { retryable: true, details: { atMs, lateMs } },
    );
    this.atMs = atMs;
    this.lateMs = lateMs;
  }
}
