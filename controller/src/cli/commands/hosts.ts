/**
 * `drover hosts [--wide] [--strict]`: every host, its state and capacity (and with --wide, its
 * CRIU's abilities); `drover hosts rm H [--force]`: forget a host that left the cluster.
 */
import type { Argv, CommandModule } from 'yargs';
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

const rm: CommandModule<GlobalArgs, GlobalArgs & { host: string; force: boolean }> = {
  command: 'rm <host>',
  describe:
    'Forget a host that left the cluster (its agent stopped); refused while it has live jobs',
  builder: (y) =>
    y.positional('host', { type: 'string', demandOption: true }).option('force', {
      type: 'boolean',
      default: false,
      describe: 'also when its last heartbeat listed live jobs (the host is gone with them)',
    }),
  handler: async (argv) => {
    await callController(
      argv,
      'hosts-remove',
      { host: argv.host, ...(argv.force ? { force: true } : {}) },
      (r) =>
        `removed host ${r.host}` +
        (r.jobs.length ? ` (left behind: ${r.jobs.join(', ')})` : '') +
        (r.lastSeen ? `; last heard ${r.lastSeen}` : ''),
      undefined,
      { host: 'HOST' },
    );
  },
};

export const hostsCommand: CommandModule<GlobalArgs, Args> = {
  command: 'hosts',
  describe: 'List hosts (from agent heartbeats); rm HOST: forget one that left',
  builder: (y: Argv<GlobalArgs>) =>
    strictOption(y)
      .option('wide', {
        type: 'boolean',
        describe: "more columns: what each host's CRIU was built with and can do (criu check)",
      })
      .command(rm) as unknown as Argv<Args>,
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
