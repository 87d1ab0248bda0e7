/** `drover migrate JOB [--to H] [--mode M]`: move a running job; prints its per-phase timeline. */
import type { CommandModule } from 'yargs';
import { MIGRATION_MODES } from '@drover/protocol';
import { callController, type GlobalArgs } from '../context.js';
import { timeline } from '../output.js';

type Args = GlobalArgs & {
  job: string;
  to: string | undefined;
  mode: (typeof MIGRATION_MODES)[number] | undefined;
};

export const migrateCommand: CommandModule<GlobalArgs, Args> = {
  command: 'migrate <job>',
  describe: 'Live-migrate a job to another host',
  builder: (y) =>
    y
      .positional('job', { type: 'string', demandOption: true })
      .option('to', { type: 'string', describe: 'destination host (default: placement picks)' })
      .option('mode', { choices: MIGRATION_MODES, describe: 'how memory moves (default auto)' }),
  handler: async (argv) => {
    const op = await callController(
      argv,
      'migrate',
      {
        jobId: argv.job,
        ...(argv.to ? { to: argv.to } : {}),
        ...(argv.mode ? { mode: argv.mode } : {}),
      },
      (o) =>
        o.state === 'done' && o.migration
          ? `${argv.job} moved ${o.migration.source} → ${o.migration.destination} (${o.migration.mode}; ${o.placement})\n${timeline(o.migration)}`
          : `${argv.job} did not move: ${o.error?.message ?? o.state}; it runs where it was`,
    );
    if (op.state !== 'done') process.exitCode = 1;
  },
};
