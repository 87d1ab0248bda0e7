/**
 * Lists that could not hear from every host (`jobs`, `hosts`, `images ls`): a warning on stderr
 * naming those hosts, and with `--strict` the exit code `incomplete` (the list is printed all
 * the same). The reply's `unanswered` field carries them in `--json` output.
 */
import type { Argv } from 'yargs';
import { ExitCode } from './exit-codes.js';

/** The `--strict` flag of a list command. */
export function strictOption<T>(y: Argv<T>): Argv<T & { strict: boolean }> {
  return y.option('strict', {
    type: 'boolean',
    default: false,
    describe: `exit ${ExitCode.incomplete} when a host did not answer (the list is incomplete)`,
  });
}

/** The warning for hosts a list did not hear from, or null when every host answered. */
export function unansweredWarning(
  unanswered: readonly string[] | undefined,
  what: string,
): string | null {
  if (!unanswered?.length) return null;
  const n = unanswered.length;
  return (
    `drover: warning: ${n} host${n === 1 ? '' : 's'} did not answer; ${what}:\n` +
    unanswered.map((u) => `drover:   ${u}\n`).join('')
  );
}

/** Print the warning for `reply`'s unanswered hosts; with `strict`, make the exit code say so. */
export function reportUnanswered(
  reply: { unanswered?: readonly string[] | undefined },
  what: string,
  strict: boolean,
  stderr: (s: string) => void = (s) => void process.stderr.write(s),
): void {
  const warning = unansweredWarning(reply.unanswered, what);
  if (warning === null) return;
  stderr(warning);
  if (strict) process.exitCode = ExitCode.incomplete;
}
