/** `drover drain H [--parallel N]`: cordon a host and move every job off it. */
import type { CommandModule } from 'yargs';
import { callController, type GlobalArgs } from '../context.js';
import { operationFailure } from '../exit-codes.js';
import { followDrain } from '../follow.js';
import { table } from '../output.js';

type Args = GlobalArgs & { host: string; parallel: number | undefined; progress: boolean };

export const drainCommand: CommandModule<GlobalArgs, Args> = {
  command: 'drain <host>',
  describe: 'Cordon a host and migrate every job off it',
  builder: (y) =>
    y
      .positional('host', { type: 'string', demandOption: true })
      .option('parallel', { type: 'number', describe: 'migrations at once (default 2)' })
      .option('progress', {
        type: 'boolean',
        default: true,
        describe: "show each job's progress on stderr as lines (never with --json)",
      }),
  handler: async (argv) => {
    const op = await callController(
      argv,
      'drain',
      { host: argv.host, ...(argv.parallel ? { parallel: argv.parallel } : {}) },
      (o) =>
        [
          `drain of ${o.host}: ${o.state} (${o.opId})`,
          table(
            ['JOB', 'NAME', 'OUTCOME', 'TO', 'FROZEN', 'WHY'],
            (o.items ?? []).map((i) => [
              i.jobId,
              i.name,
              i.state,
              i.destination ?? '-',
              i.frozenMs === null ? '-' : `${i.frozenMs} ms`,
              i.reason ?? '',
            ]),
          ),
        ].join('\n'),
      argv.progress && !argv.json ? followDrain(argv.host, process.stderr) : undefined,
    );
    // Jobs that could not move (refused) exit 4; a migration that ran and failed exits 1.
    const failure = operationFailure(op);
    if (failure) throw failure;
  },
};
