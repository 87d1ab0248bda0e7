/**
 * `drover migrate JOB [--to H] [--mode M]`: move a running job, showing its progress on stderr;
 * prints its per-phase timeline.
 */
import type { CommandModule } from 'yargs';
import { MIGRATION_MODES } from '@drover/protocol';
import type { GlobalArgs } from '../context.js';
import { operationFailure } from '../exit-codes.js';
import { callAndSettle } from '../settle.js';
import { followMigration } from '../follow.js';
import { resolveJob } from '../job-ref.js';
import { failureReport, timeline } from '../output.js';

type Args = GlobalArgs & {
  job: string;
  to: string | undefined;
  mode: (typeof MIGRATION_MODES)[number] | undefined;
  progress: boolean;
};

export const migrateCommand: CommandModule<GlobalArgs, Args> = {
  command: 'migrate <job>',
  describe: 'Live-migrate a job to another host',
  builder: (y) =>
    y
      .positional('job', { type: 'string', demandOption: true })
      .option('to', { type: 'string', describe: 'destination host (default: placement picks)' })
      .option('mode', { choices: MIGRATION_MODES, describe: 'how memory moves (default auto)' })
      .option('progress', {
        type: 'boolean',
        default: true,
        describe:
          'show progress on stderr: a bar on a terminal, a line a second otherwise (never with --json)',
      }),
  handler: async (argv) => {
    let jobId = argv.job;
    // Waits for the outcome even if the controller dies meanwhile (settle.ts).
    const op = await callAndSettle(
      argv,
      'migrate',
      async (ask) => {
        jobId = await resolveJob(ask, argv.job);
        return {
          jobId,
          ...(argv.to ? { to: argv.to } : {}),
          ...(argv.mode ? { mode: argv.mode } : {}),
        };
      },
      (o) =>
        o.state === 'done' && o.migration
          ? `${argv.job} moved ${o.migration.source} → ${o.migration.destination} (${o.migration.mode}; ${o.placement})\n${timeline(o.migration)}`
          : [
              `${argv.job} did not move: ${o.error?.message ?? o.state}; it runs where it was`,
              // The failed migration's phases and why (CRIU's own lines when it was CRIU).
              o.migration ? timeline(o.migration) : '',
              o.error ? failureReport(o.error) : '',
            ]
              .filter((l) => l !== '')
              .join('\n'),
      // Started once the job's id is known (the reference may be a name).
      argv.progress && !argv.json
        ? (bus) => followMigration(jobId, process.stderr)(bus)
        : undefined,
    );
    // A refusal (the job cannot move) exits 4 as from preflight; a failed migration 1.
    const failure = operationFailure(op);
    if (failure) throw failure;
  },
};
