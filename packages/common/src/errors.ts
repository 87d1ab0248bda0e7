/** Drover's error model: one base error with a string code from one table, plus typed subclasses. */

/**
 * Every error code Drover uses, in one table. Branch on `code`, never on a message.
 * Layers add their codes here so the wire `Failure` codec can name them all.
 */
export const ErrorCode = {
  Internal: 'INTERNAL',
  InvalidArgument: 'INVALID_ARGUMENT',
  NotFound: 'NOT_FOUND',
  AlreadyExists: 'ALREADY_EXISTS',
  FailedPrecondition: 'FAILED_PRECONDITION',
  Timeout: 'TIMEOUT',
  Unavailable: 'UNAVAILABLE',
  Syscall: 'SYSCALL',
  Criu: 'CRIU',
  CriuNotProvisioned: 'CRIU_NOT_PROVISIONED',
  CgroupBusy: 'CGROUP_BUSY',
  Cgroup: 'CGROUP',
  Checkpointing: 'CHECKPOINTING',
  /** Stored data is damaged (a checksum does not match). */
  DataLoss: 'DATA_LOSS',
  /** The caller's identity may not do this (NATS refused it by the caller's role). */
  PermissionDenied: 'PERMISSION_DENIED',
  /** A job's command could not be started (exec failed: not found, not executable, ...). */
  StartFailed: 'START_FAILED',
  /** A pool ran out (e.g. the job network has no free address). */
  ResourceExhausted: 'RESOURCE_EXHAUSTED',
  /** A scheduled cut's instant had passed before the host could arm it: nothing was frozen. */
  CutMissed: 'CUT_MISSED',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Options every Drover error accepts. */
export interface DroverErrorOptions {
  /** Whether retrying the same operation later may succeed. Default false. */
  retryable?: boolean;
  /** The error that caused this one. */
  cause?: unknown;
  /** Structured, JSON-safe facts for operators and the wire codec. */
  details?: Record<string, unknown>;
}

/** Base of every error Drover raises on purpose. */
export class DroverError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details: Record<string, unknown>;
  /** Errors raised while rolling back after this one: attached, never substituted. */
  readonly suppressed: unknown[] = [];

  constructor(code: ErrorCode, message: string, options: DroverErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.details = options.details ?? {};
  }

  /** Attach an error that happened during rollback; the first error stays the one reported. */
  suppress(err: unknown): this {
    this.suppressed.push(err);
    return this;
  }
}

/** True when `err` is a DroverError, optionally with the given code. */
export function isDroverError(err: unknown, code?: ErrorCode): err is DroverError {
  return err instanceof DroverError && (code === undefined || err.code === code);
}

/** Wrap anything thrown into a DroverError (unchanged if it already is one). */
export function toDroverError(err: unknown, code: ErrorCode = ErrorCode.Internal): DroverError {
  if (err instanceof DroverError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new DroverError(code, message, { cause: err });
}

/** An error as plain JSON: name, message, code, details, and its causes and rollback errors. */
export interface ErrorJson {
  name: string;
  message: string;
  code?: unknown;
  details?: Record<string, unknown>;
  cause?: ErrorJson | string;
  suppressed?: (ErrorJson | string)[];
}

/** How deep causes and rollback errors are followed (a chain longer than this is cut). */
const MAX_ERROR_DEPTH = 6;

/**
 * `err` with everything an operator needs to see why it happened: its cause chain and the errors
 * attached during rollback (`suppressed`), each with its code and details. Never throws.
 */
export function errorToJson(err: unknown, depth = 0): ErrorJson | string {
  if (!(err instanceof Error)) return String(err);
  const out: ErrorJson = { name: err.name, message: err.message };
  const e = err as Error & { code?: unknown; details?: unknown; suppressed?: unknown };
  if (e.code !== undefined) out.code = e.code;
  if (e.details && typeof e.details === 'object' && Object.keys(e.details).length > 0)
    out.details = e.details as Record<string, unknown>;
  if (depth < MAX_ERROR_DEPTH) {
    if (err.cause !== undefined) out.cause = errorToJson(err.cause, depth + 1);
    if (Array.isArray(e.suppressed) && e.suppressed.length > 0)
      out.suppressed = e.suppressed.map((s: unknown) => errorToJson(s, depth + 1));
  }
  return out;
}
