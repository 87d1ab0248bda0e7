/**
 * The runner both CLIs start with: yargs set up the same way (strict, one command required,
 * failures not printed by yargs), and one failure tail: the error's message prefixed with the
 * CLI's name, the CLI's explanation and advice under it, and the exit code from its table.
 */
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { exitCodeOf, isShown, UsageError, type ExitCodeTable } from './exit-codes.js';

/** What a CLI tells the runner. */
export interface CliSpec {
  /** The program's name: yargs' script name and the prefix of every error line. */
  name: string;
  /** The usage line (`$0 <command> [options]`). */
  usage: string;
  exitCodes: ExitCodeTable;
  /** `--version`'s answer (default: yargs' own guess). */
  version?: string;
  /** Lines under the error message: what caused it, what failed while rolling back. */
  explain?: (err: unknown) => readonly string[];
  /** What to do about an error, for a human; null when there is nothing to say. */
  advice?: (err: unknown) => string | null;
  /** The CLI's options and commands. */
  build: (y: Argv) => Argv<object>;
}

/**
 * Parse `argv` and run the command it names. A failure (yargs', or an error the command threw)
 * is printed on stderr unless the command already showed it, and sets `process.exitCode` from
 * the CLI's table. Resolves with that exit code (0 on success).
 */
export async function runCli(
  spec: CliSpec,
  argv: readonly string[] = hideBin(process.argv),
): Promise<number> {
  let failed: unknown = null;
  try {
    let y = spec
      .build(
        yargs([...argv])
          .scriptName(spec.name)
          .usage(spec.usage),
      )
      .demandCommand(1, 'name a command (see --help)')
      .strict()
      .fail((msg, err) => {
        // Throwing stops yargs here: a failed check must not go on to run the command.
        failed = err ?? new UsageError(msg);
        throw failed;
      });
    if (spec.version !== undefined) y = y.version(spec.version);
    await y.help().parseAsync();
  } catch (err) {
    // Also what `fail` throws (synchronously, from inside parseAsync).
    failed ??= err;
  }
  if (failed === null) return 0;
  if (!isShown(failed)) {
    const say = (line: string): void => void process.stderr.write(`${spec.name}: ${line}\n`);
    say(failed instanceof Error ? failed.message : String(failed));
    // What caused it and what failed while rolling back: never dropped.
    for (const line of spec.explain?.(failed) ?? []) say(line);
    const advice = spec.advice?.(failed);
    if (advice) say(advice);
  }
  const code = exitCodeOf(spec.exitCodes, failed);
  process.exitCode = code;
  return code;
}
