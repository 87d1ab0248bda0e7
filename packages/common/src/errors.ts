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
  /** A pool ran out (e.g. the job network has no free address). */
  ResourceExhausted: 'RESOURCE_EXHAUSTED',
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
