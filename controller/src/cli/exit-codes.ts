/** The `drover` CLI's exit codes, in one place (documented in the README). */
import { ErrorCode, isDroverError } from '@drover/common';

/** Exit codes. */
export const ExitCode = {
  ok: 0,
  /** The operation ran and failed (e.g. a migration rolled back). */
  failed: 1,
  /** Bad flags or arguments (nothing was changed). */
  usage: 2,
  /** No such job, host or operation. */
  notFound: 3,
  /** Refused: the cluster's state does not allow it (cordoned, unreachable, cannot move). */
  refused: 4,
  /** The controller or an agent could not be reached in time. */
  unavailable: 5,
  /** Not permitted: this client's certificate (its role) may not do this. Nothing changed. */
  denied: 6,
  /** `--strict` on a list: some host did not answer, so the list printed is incomplete. */
  incomplete: 7,
} as const;

/** The exit code for an error. */
export function exitCodeOf(err: unknown): number {
  if (!isDroverError(err)) return ExitCode.failed;
  return exitCodeOfCode(err.code);
}

/**
 * The exit code for an error code, wherever it was reported: thrown at the CLI, or recorded in
 * an operation that failed (a migration refused by preflight exits 4 from `migrate` and `drain`
 * as from `preflight` and `checkpoint`).
 */
export function exitCodeOfCode(code: string): number {
  switch (code) {
    case ErrorCode.InvalidArgument:
      return ExitCode.usage;
    case ErrorCode.NotFound:
      return ExitCode.notFound;
    case ErrorCode.FailedPrecondition:
    case ErrorCode.AlreadyExists:
    case ErrorCode.ResourceExhausted:
      return ExitCode.refused;
    case ErrorCode.Unavailable:
    case ErrorCode.Timeout:
      return ExitCode.unavailable;
    case ErrorCode.PermissionDenied:
      return ExitCode.denied;
    default:
      return ExitCode.failed;
  }
}

/**
 * The exit code of an operation that came back: 0 when done; 4 when it was refused before
 * anything was changed (a job preflight says cannot move, a mode the hosts lack: the same code
 * as when `preflight` or `checkpoint` refuse it up front); otherwise 1, the operation ran and
 * failed (rolled back — also when an agent died on the way). For a drain, by its jobs: a job
 * whose migration ran and failed makes it 1, jobs that were only refused make it 4.
 */
export function exitCodeOfOperation(op: {
  state: string;
  error: { code: string } | null;
  items?: readonly { state: string; code?: string }[];
}): number {
  if (op.state === 'done') return ExitCode.ok;
  const refused = (code: string | undefined): boolean =>
    code === ErrorCode.FailedPrecondition ||
    code === ErrorCode.AlreadyExists ||
    code === ErrorCode.ResourceExhausted;
  const items = (op.items ?? []).filter((i) => i.state !== 'done');
  if (items.length > 0)
    return items.every((i) => refused(i.code)) ? ExitCode.refused : ExitCode.failed;
  return refused(op.error?.code) ? ExitCode.refused : ExitCode.failed;
}

/** What to do about an error, for a human. */
export function adviceFor(err: unknown): string | null {
  if (!isDroverError(err)) return null;
  if (err.code === ErrorCode.PermissionDenied)
    return 'this needs an operator certificate (--nats-cert/--nats-key); a viewer may only look';
  if (err.code === ErrorCode.Unavailable && /drover\.ctl\./.test(err.message)) {
    return 'is the controller running? (drover-controller, or `drover up` for a local cluster)';
  }
  if (err.code === ErrorCode.Unavailable)
    return 'is NATS reachable? (--nats URL or DROVER_NATS_SERVERS)';
  if (err.code === ErrorCode.NotFound) return 'see `drover hosts` and `drover jobs`';
  return null;
}
