/** `drover jobs [--host H] [--wide]`: every job in the cluster. */
import type { CommandModule } from 'yargs';
import { callController, type GlobalArgs } from '../context.js';
import { table } from '../output.js';

type Args = GlobalArgs & { host: string | undefined; wide: boolean | undefined };

export const jobsCommand: CommandModule<GlobalArgs, Args> = {
  command: 'jobs',
  describe: 'List jobs on every reachable host',
  builder: (y) =>
    y
      .option('host', { type: 'string', describe: 'only this host' })
      .option('wide', { type: 'boolean', describe: 'more columns: the job address' }),
  handler: async (argv) => {
    await callController(argv, 'jobs', argv.host ? { host: argv.host } : {}, (r) =>
      argv.wide
        ? table(
            ['JOB', 'NAME', 'HOST', 'STATE', 'ADDRESS', 'PID', 'COMMAND'],
            r.jobs.map((j) => [
              j.id,
              j.name,
              j.host,
              j.state,
              j.network?.mode === 'job' ? j.network.address : 'host',
              String(j.mainPidInside ?? '-'),
              j.command.join(' ').slice(0, 60),
            ]),
          )
        : table(
            ['JOB', 'NAME', 'HOST', 'STATE', 'PID', 'COMMAND'],
            r.jobs.map((j) => [
              j.id,
              j.name,
              j.host,
              j.state,
              String(j.mainPidInside ?? '-'),
              j.command.join(' ').slice(0, 60),
            ]),
          ),
    );
  },
};
