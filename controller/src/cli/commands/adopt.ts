/** `drover adopt --host H PID`: take an existing process subtree on H as a job. */
import type { CommandModule } from 'yargs';
import { callController, type GlobalArgs } from '../context.js';

type Args = GlobalArgs & { host: string; pid: number; name: string | undefined };

export const adoptCommand: CommandModule<GlobalArgs, Args> = {
  command: 'adopt <pid>',
  describe: 'Adopt a running process subtree as a job (its restore needs its PIDs free)',
  builder: (y) =>
    y
      .positional('pid', { type: 'number', demandOption: true })
      .option('host', { type: 'string', demandOption: true, describe: 'the host it runs on' })
      .option('name', { type: 'string' }),
  handler: async (argv) => {
    await callController(
      argv,
      'adopt',
      { host: argv.host, pid: argv.pid, ...(argv.name ? { name: argv.name } : {}) },
      (j) => `${j.id} adopted on ${j.host} (root PID ${j.rootPid})`,
    );
  },
};
