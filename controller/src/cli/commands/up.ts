/** `drover up [--hosts N] [--dir D]`: a local cluster on this machine, left running. */
import type { CommandModule } from 'yargs';
import type { LocalClusterState } from '@drover/local-cluster';
import { defaultLocalDir, type GlobalArgs } from '../context.js';
import { UsageError } from '@drover/cli-kit';
import { localContextName, saveLocalContext } from '../cluster-context.js';

export type LocalArgs = GlobalArgs & { dir: string };
type Args = LocalArgs & { hosts: number; insecure: boolean };

/** The `--dir` option the local-cluster commands share. */
export const dirOption = {
  type: 'string',
  default: defaultLocalDir(),
  describe: 'the local cluster directory (state file, hosts, NATS store, logs; DROVER_LOCAL_DIR)',
} as const;

export const upCommand: CommandModule<GlobalArgs, Args> = {
  command: 'up',
  describe:
    'Start a local cluster on this machine — NATS, emulated hosts with an agent each, the ' +
    'controller — and leave it running',
  builder: (y) =>
    y
      .option('hosts', { type: 'number', default: 3, describe: 'emulated hosts (h1..hN), 1..99' })
      .option('dir', dirOption)
      .option('insecure', {
        type: 'boolean',
        default: false,
        describe:
          'no TLS and no roles on NATS: anyone who reaches it may command every agent ' +
          '(default: a CA, certificates, TLS required, per-role permissions)',
      }),
  handler: async (argv) => {
    if (!Number.isInteger(argv.hosts) || argv.hosts < 1 || argv.hosts > 99) {
      throw new UsageError(`--hosts wants 1..99, got ${argv.hosts}`);
    }
    // Loaded here, not at the top: the other commands do not need the emulated hosts.
    const { localUp } = await import('@drover/local-cluster');
    const r = await localUp({
      dir: argv.dir,
      hosts: argv.hosts,
      insecure: argv.insecure,
      onProgress: (line) => process.stderr.write(`drover up: ${line}\n`),
    });
    const context = saveLocalContext(localContextName(argv.dir, defaultLocalDir({})), {
      natsUrl: r.state.natsUrl ?? '',
      dir: argv.dir,
      ...(r.state.tls ? { tls: r.state.tls } : {}),
    });
    process.stdout.write(
      argv.json
        ? JSON.stringify(
            { already: r.already, restarted: r.restarted ?? [], ...r.state, context },
            null,
            2,
          ) + '\n'
        : report(r.state, r.already, r.restarted ?? [], context),
    );
  },
};

/** What is up and what to try, for a human. */
function report(
  s: LocalClusterState,
  already: boolean,
  restarted: string[],
  context: { name: string; file: string; current: boolean },
): string {
  const custom = s.dir !== defaultLocalDir({});
  const dirFlag = custom ? ` --dir ${s.dir}` : '';
  const lines = [
    restarted.length > 0
      ? `local cluster ${s.runId}: restarted ${restarted.join(', ')}; jobs untouched`
      : already
        ? `local cluster ${s.runId} is already up and healthy (${s.hosts} hosts); nothing started`
        : `local cluster ${s.runId} is up: ${s.hosts} emulated host(s) with an agent each, ` +
          'NATS with JetStream, the controller',
    `  nats   ${s.natsUrl}` +
      (s.tls
        ? ` (TLS; drover commands use the operator certificate ${s.tls.certFile})`
        : ' (INSECURE: no TLS, no roles)'),
    `  hosts  ${(s.hostList ?? []).map((h) => `${h.name} ${h.address}`).join(' · ')}`,
    ...(s.metrics
      ? [
          `  metrics ${s.metrics.controller ?? '(controller: none)'} (controller) · ` +
            Object.entries(s.metrics.agents)
              .map(([h, url]) => `${h} ${url}`)
              .join(' · '),
        ]
      : []),
    `  state  ${s.dir}/cluster.json`,
    `  context ${context.name}${context.current ? ' (current)' : ''} in ${context.file}: ` +
      `drover --context ${context.name} reaches this cluster from anywhere`,
    `  logs   ${s.logDir}`,
    '',
    custom
      ? `drover commands find this cluster with DROVER_LOCAL_DIR=${s.dir} (or --nats ${s.natsUrl}).`
      : 'drover commands on this machine use this cluster by default (DROVER_NATS_SERVERS or ' +
        '--nats point them elsewhere).',
  ];
  if (process.env.DROVER_NATS_SERVERS) {
    lines.push(
      `note: DROVER_NATS_SERVERS is set (${process.env.DROVER_NATS_SERVERS}): unset it, or ` +
        `pass --nats ${s.natsUrl}, to reach this cluster.`,
    );
  }
  lines.push(
    'Try:',
    '  drover hosts',
    "  drover run --host h1 --name clock -- /bin/sh -c 'while :; do date; sleep 1; done'",
    '  drover jobs',
    '  drover logs JOB',
    `  drover migrate JOB${s.hosts > 1 ? ' --to h2' : ''}`,
    '  drover drain h1',
    '  drover console --actions    the web console, live (open the URL it prints)',
    `  drover demo${dirFlag}    a scripted tour: run, migrate, drain, checkpoint, restore`,
    `  drover down${dirFlag}    remove it all: processes, namespaces, mounts, cgroups, files`,
  );
  return lines.join('\n') + '\n';
}
