/** `drover hosts [--wide]`: every host, its state and capacity (and with --wide, its CRIU's abilities). */
import type { CommandModule } from 'yargs';
import type { HostStatus } from '@drover/protocol';
import { callController, type GlobalArgs } from '../context.js';
import { bytes, table } from '../output.js';
import { reportUnanswered, strictOption } from '../unanswered.js';

type Args = GlobalArgs & { wide: boolean | undefined; strict: boolean };

/** The ABILITIES column: CRIU's optional libraries, then the kernel features it lacks. */
export function abilitiesColumn(h: HostStatus): string {
  const a = h.info.criu.abilities;
  if (!a) return 'probing';
  const built = a.build.length ? a.build.join(',') : 'no optional libraries';
  const of = a.features.length + a.missing.length;
  const lacks = a.missing.length ? ` (lacks ${a.missing.join(',')})` : '';
  return `${built}; ${a.features.length}/${of} features${lacks}`;
}

export const hostsCommand: CommandModule<GlobalArgs, Args> = {
  command: 'hosts',
  describe: 'List hosts (from agent heartbeats)',
  builder: (y) =>
    strictOption(y).option('wide', {
      type: 'boolean',
      describe: "more columns: what each host's CRIU was built with and can do (criu check)",
    }),
  handler: async (argv) => {
    const reply = await callController(argv, 'hosts', {}, (r) =>
      table(
        [
          'HOST',
          'STATE',
          'JOBS',
          'MEM FREE',
          'CPUS',
          'CRIU',
          'LAZY',
          ...(argv.wide ? ['ABILITIES'] : []),
        ],
        r.hosts.map((h) => [
          h.host,
          !h.reachable ? 'unreachable' : h.cordoned ? 'cordoned' : 'ready',
          String(h.info.jobs.length),
          bytes(h.info.memory.availableBytes),
          String(h.info.cpus),
          h.info.criu.version,
          h.info.criu.lazyPages ? 'yes' : 'no',
          ...(argv.wide ? [abilitiesColumn(h)] : []),
        ]),
      ),
    );
    reportUnanswered(reply, 'their rows are from their last heartbeat', argv.strict);
  },
};
