/** The `drover` CLI's exit codes, in one place (documented in the README). */
import { ErrorCode, isDroverError } from '@drover/common';
import { exitCodeOf as exitCodeOfError, ShownFailure, type ExitCodeTable } from '@drover/cli-kit';

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

/** The table the CLI's runner (`@drover/cli-kit`) takes every exit code from. */
export const exitCodes: ExitCodeTable = {
  failed: ExitCode.failed,
  usage: ExitCode.usage,
  byCode: {
    [ErrorCode.InvalidArgument]: ExitCode.usage,
    [ErrorCode.NotFound]: ExitCode.notFound,
    [ErrorCode.FailedPrecondition]: ExitCode.refused,
    [ErrorCode.AlreadyExists]: ExitCode.refused,
    [ErrorCode.ResourceExhausted]: ExitCode.refused,
    [ErrorCode.Unavailable]: ExitCode.unavailable,
    [ErrorCode.Timeout]: ExitCode.unavailable,
    [ErrorCode.PermissionDenied]: ExitCode.denied,
  },
};

/** The exit code for an error. */
export function exitCodeOf(err: unknown): number {
  return exitCodeOfError(exitCodes, err);
}

/** The exit code for an error code, thrown at the CLI or recorded in an operation's item. */
export function exitCodeOfCode(code: string): number {
  return exitCodes.byCode[code as ErrorCode] ?? exitCodes.failed;
}

/**
 * How an operation that came back ended, as the error the command exits with (its output has
 * already said why): null when done; refused (4) when it was refused before anything was changed
 * (a job preflight says cannot move, a mode the hosts lack: the same code as when `preflight` or
 * `checkpoint` refuse it up front); otherwise it ran and failed (1: rolled back — also when an
 * agent died on the way). For a drain, by its jobs: a job whose migration ran and failed makes it
 * a failure, jobs that were only refused make it a refusal.
 */
export function operationFailure(op: {
  state: string;
  error: { code: string } | null;
  items?: readonly { state: string; code?: string }[];
}): ShownFailure | null {
  if (op.state === 'done') return null;
  const isRefusal = (code: string | undefined): boolean =>
    code === ErrorCode.FailedPrecondition ||
    code === ErrorCode.AlreadyExists ||
    code === ErrorCode.ResourceExhausted;
  const items = (op.items ?? []).filter((i) => i.state !== 'done');
  const refused =
    items.length > 0 ? items.every((i) => isRefusal(i.code)) : isRefusal(op.error?.code);
  return refused
    ? new ShownFailure(`refused: ${op.state}`, ErrorCode.FailedPrecondition)
    : new ShownFailure(op.state);
}

/** The exit code of an operation that came back (see {@link operationFailure}). */
export function exitCodeOfOperation(op: Parameters<typeof operationFailure>[0]): number {
  const failure = operationFailure(op);
  return failure === null ? ExitCode.ok : exitCodeOf(failure);
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
