/** `drover hosts`: every host, its state and capacity. */
import type { CommandModule } from 'yargs';
import { callController, type GlobalArgs } from '../context.js';
import { bytes, table } from '../output.js';

export const hostsCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'hosts',
  describe: 'List hosts (from agent heartbeats)',
  handler: async (argv) => {
    await callController(argv, 'hosts', {}, (r) =>
      table(
        ['HOST', 'STATE', 'JOBS', 'MEM FREE', 'CPUS', 'CRIU', 'LAZY'],
        r.hosts.map((h) => [
          h.host,
          !h.reachable ? 'unreachable' : h.cordoned ? 'cordoned' : 'ready',
          String(h.info.jobs.length),
          bytes(h.info.memory.availableBytes),
          String(h.info.cpus),
          h.info.criu.version,
          h.info.criu.lazyPages ? 'yes' : 'no',
        ]),
      ),
    );
  },
};
