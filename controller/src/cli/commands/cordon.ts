/** `drover cordon H` / `drover uncordon H`: keep new work off a host, or allow it again. */
import type { CommandModule } from 'yargs';
import { callController, type GlobalArgs } from '../context.js';

type Args = GlobalArgs & { host: string };

function cordonModule(op: 'cordon' | 'uncordon'): CommandModule<GlobalArgs, Args> {
  return {
    command: `${op} <host>`,
    describe:
      op === 'cordon' ? 'Keep new jobs and migrations off a host' : 'Let a host take work again',
    builder: (y) => y.positional('host', { type: 'string', demandOption: true }),
    handler: async (argv) => {
      await callController(
        argv,
        op,
        { host: argv.host },
        (h) => `${h.host} ${h.cordoned ? 'cordoned' : 'uncordoned'}`,
      );
    },
  };
}

export const cordonCommand = cordonModule('cordon');
export const uncordonCommand = cordonModule('uncordon');
