/** `drover resolve NAME`: the address of a named job (`drover run --name`) on the job network. */
import type { CommandModule } from 'yargs';
import { callController, type GlobalArgs } from '../context.js';

type Args = GlobalArgs & { name: string };

export const resolveCommand: CommandModule<GlobalArgs, Args> = {
  command: 'resolve <name>',
  describe: "A named job's address (what other jobs' /etc/hosts say)",
  builder: (y) => y.positional('name', { type: 'string', demandOption: true }),
  handler: async (argv) => {
    await callController(
      argv,
      'resolve',
      { name: argv.name },
      (r) => `${r.address}\t${r.name} (${r.jobId})`,
    );
  },
};
