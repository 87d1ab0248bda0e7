/** Errors on the wire: a local DroverError becomes a `Failure` and comes back as a DroverError. */
import { DroverError, ErrorCode, type ErrorCode as Code } from '@drover/common';

/** An error as it crosses NATS. `cause` nests; `details` is JSON. */
export interface Failure {
  code: Code;
  message: string;
  retryable: boolean;
  details: Record<string, unknown>;
  /** The name of the error class on the side that failed (e.g. `CriuError`). */
  name?: string;
  cause?: Failure;
  /** Errors raised while rolling back after this one (attached, never substituted). */
  suppressed?: Failure[];
}

const KNOWN_CODES = new Set<string>(Object.values(ErrorCode));
const MAX_DEPTH = 4;
/** Rollback errors carried per failure, at most (the rest are counted in `details`). */
const MAX_SUPPRESSED = 8;
const MAX_MESSAGE = 4096;
/** Largest `details` carried (as JSON); bigger ones are replaced by a note. */
const MAX_DETAILS = 16 * 1024;

/**
 * Turn anything thrown into a Failure (foreign errors become INTERNAL): its cause chain and the
 * errors attached during rollback travel with it, so the other side can show why.
 */
export function errorToFailure(err: unknown, depth = 0): Failure {
  const e =
    err instanceof DroverError
      ? err
      : new DroverError(ErrorCode.Internal, err instanceof Error ? err.message : String(err), {
          // A foreign error's own cause, and what Node puts on system errors (ENOENT, open, ...).
          ...(err instanceof Error && err.cause !== undefined ? { cause: err.cause } : {}),
          details: systemFacts(err),
        });
  const failure: Failure = {
    code: e.code,
    message: e.message.slice(0, MAX_MESSAGE),
    retryable: e.retryable,
    details: jsonSafe(e.details),
    name: err instanceof Error ? err.name : 'Error',
  };
  if (depth < MAX_DEPTH && e.cause !== undefined) {
    failure.cause = errorToFailure(e.cause, depth + 1);
  }
  if (depth < MAX_DEPTH && e.suppressed.length > 0) {
    failure.suppressed = e.suppressed
      .slice(0, MAX_SUPPRESSED)
      .map((s) => errorToFailure(s, depth + 1));
    if (e.suppressed.length > MAX_SUPPRESSED)
      failure.details = { ...failure.details, suppressedTotal: e.suppressed.length };
  }
  return failure;
}

/** The errno facts Node attaches to system errors (`code`, `errno`, `syscall`, `path`). */
function systemFacts(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return {};
  const out: Record<string, unknown> = {};
  for (const k of ['code', 'errno', 'syscall', 'path', 'address', 'port'] as const) {
    const v = (err as unknown as Record<string, unknown>)[k];
    if (typeof v === 'string' || typeof v === 'number') out[k] = v;
  }
  return out;
}

/** A remote failure as a local error; `details.remoteName` keeps the original class name. */
export class RemoteError extends DroverError {}

/** Turn a Failure back into an error that callers branch on by `code`. */
export function failureToError(f: Failure): DroverError {
  const code = KNOWN_CODES.has(f.code) ? f.code : ErrorCode.Internal;
  const options = {
    retryable: f.retryable === true,
    details: { ...(f.details ?? {}), ...(f.name ? { remoteName: f.name } : {}) },
    ...(f.cause ? { cause: failureToError(f.cause) } : {}),
  };
  const err = new RemoteError(code, String(f.message), options);
  if (Array.isArray(f.suppressed)) {
    for (const s of f.suppressed) if (isFailure(s)) err.suppress(failureToError(s));
  }
  return err;
}

/** Check that an unknown value is shaped like a Failure. */
export function isFailure(v: unknown): v is Failure {
  if (typeof v !== 'object' || v === null) return false;
  const f = v as Record<string, unknown>;
  return typeof f.code === 'string' && typeof f.message === 'string';
}

function jsonSafe(details: Record<string, unknown>): Record<string, unknown> {
  try {
    const text = JSON.stringify(details) ?? '{}';
    // A failure must fit in a reply whatever a handler put into it.
    if (text.length > MAX_DETAILS) return { truncated: true, sizeChars: text.length };
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    return { unserializable: true };
  }
}
