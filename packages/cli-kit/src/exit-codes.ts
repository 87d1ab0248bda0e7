/**
 * How a command's outcome becomes an exit code: each CLI declares one table, command handlers
 * throw typed errors (never set numbers), and the runner looks the error up in the table.
 */
import { DroverError, ErrorCode, isDroverError } from '@drover/common';

/** A CLI's exit codes (0 is success; the README of each CLI documents its table). */
export interface ExitCodeTable {
  /** The command ran and failed: every error the table names no other code for. */
  readonly failed: number;
  /** Bad flags or arguments (nothing was done). */
  readonly usage: number;
  /** The exit code for an error with this code. */
  readonly byCode: Readonly<Partial<Record<ErrorCode, number>>>;
}

/** Bad flags or arguments, found by a command rather than by yargs: exits as a usage error. */
export class UsageError extends DroverError {
  /** Marks usage errors for the runner (yargs' own failures carry it too). */
  readonly usage = true;

  constructor(message: string) {
    super(ErrorCode.InvalidArgument, message);
  }
}

/** True for a usage error: a {@link UsageError}, or an error marked `usage: true`. */
export function isUsageError(err: unknown): boolean {
  return (
    err instanceof UsageError ||
    (typeof err === 'object' && err !== null && (err as { usage?: unknown }).usage === true)
  );
}

/**
 * A failure the command has already shown (its output says what went wrong and why): the runner
 * prints nothing more and exits with the table's code for `code`, or the table's `failed` when
 * `code` is null (it ran and failed).
 */
export class ShownFailure extends Error {
  readonly code: ErrorCode | null;

  constructor(message: string, code: ErrorCode | null = null) {
    super(message);
    this.name = 'ShownFailure';
    this.code = code;
  }
}

/**
 * A command that ran another program which spoke for itself (`drover deploy` runs
 * `drover-deploy`, whose exit codes mean what `drover`'s do): its exit status is passed on.
 */
export class ChildExited extends Error {
  readonly status: number;

  constructor(command: string, status: number) {
    super(`${command} exited with status ${status}`);
    this.name = 'ChildExited';
    this.status = status;
  }
}

/** The exit code `table` gives an error a command failed with. */
export function exitCodeOf(table: ExitCodeTable, err: unknown): number {
  if (err instanceof ChildExited) return err.status;
  if (isUsageError(err)) return table.usage;
  const code = err instanceof ShownFailure ? err.code : isDroverError(err) ? err.code : null;
  return code === null ? table.failed : (table.byCode[code] ?? table.failed);
}

/** True when the command already showed the failure (the runner adds nothing). */
export function isShown(err: unknown): boolean {
  return err instanceof ShownFailure || err instanceof ChildExited;
}
