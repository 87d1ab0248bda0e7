/** `drover restore IMAGESET [--to H...]`: bring a cluster checkpoint back; the workload continues. */
import type { CommandModule } from 'yargs';
import { ShownFailure } from '@drover/cli-kit';
import { callController, type GlobalArgs } from '../context.js';
import { clusterReport } from '../cluster-report.js';

type Args = GlobalArgs & { imageset: string; to: string[] | undefined };

export const restoreCommand: CommandModule<GlobalArgs, Args> = {
  command: 'restore <imageset>',
  describe: 'Restore every job of an image set (placement picks hosts, or among --to)',
  builder: (y) =>
    y.positional('imageset', { type: 'string', demandOption: true }).option('to', {
      type: 'string',
      array: true,
      describe: 'hosts to restore onto (repeat; default: any host that fits)',
    }),
  handler: async (argv) => {
    const op = await callController(
      argv,
      'restore',
      { name: argv.imageset, ...(argv.to?.length ? { to: argv.to } : {}) },
      clusterReport,
    );
    // Whatever stopped it (its report says), a restore that did not finish exits 1.
    if (op.state !== 'done') throw new ShownFailure(`restore ${op.state}`);
  },
};
