/** `drover checkpoint JOB...|--all [--name N] [--leave-running]`: a coordinated cluster checkpoint. */
import type { CommandModule } from 'yargs';
import { callController, type GlobalArgs } from '../context.js';
import { clusterReport } from '../cluster-report.js';
import { operationFailure } from '../exit-codes.js';
import { resolveJobs } from '../job-ref.js';
import { failureReport } from '../output.js';
import { UsageError } from '@drover/cli-kit';

type Args = GlobalArgs & {
  jobs: string[] | undefined;
  all: boolean;
  name: string | undefined;
  'leave-running': boolean;
};

export const checkpointCommand: CommandModule<GlobalArgs, Args> = {
  command: 'checkpoint [jobs..]',
  describe: 'Checkpoint jobs across hosts as one consistent cut (an image set)',
  builder: (y) =>
    y
      .positional('jobs', { type: 'string', array: true, describe: 'the jobs (or --all)' })
      .option('all', { type: 'boolean', default: false, describe: 'every running job' })
      .option('name', { type: 'string', describe: 'image set name (default set-<time>)' })
      .option('leave-running', {
        type: 'boolean',
        default: false,
        describe: 'thaw the jobs after the dump (default: stop them once stored)',
      })
      .check((a) => {
        const named = (a.jobs?.length ?? 0) > 0;
        if (named === a.all) {
          throw new UsageError('name the jobs to checkpoint, or --all (not both)');
        }
        return true;
      }),
  handler: async (argv) => {
    const op = await callController(
      argv,
      'checkpoint',
      async (ask) => ({
        ...(argv.all ? { all: true } : { jobs: await resolveJobs(ask, argv.jobs!.map(String)) }),
        ...(argv.name ? { name: argv.name } : {}),
        ...(argv['leave-running'] ? { leaveRunning: true } : {}),
      }),
      (o) => [clusterReport(o), ...(o.error ? [failureReport(o.error)] : [])].join('\n'),
      undefined,
      { name: '--name', jobs: 'the jobs' },
    );
    const failure = operationFailure(op);
    if (failure) throw failure;
  },
};
