/**
 * `drover certs init|issue|ls|nats-cluster|nats-config`: the cluster CA, certificates for the
 * controller, agents, operators and viewers, the NATS server configuration that holds each to its
 * role, and for a NATS cluster a route certificate and a config (TLS-only routes) per node.
 * Runs locally (no NATS); issuing goes through the `openssl` command (`@drover/certs`).
 */
import type { Argv, CommandModule } from 'yargs';
import {
  identityPaths,
  initCluster,
  initNatsCluster,
  issueIdentity,
  listIdentities,
  natsNodeConfigPath,
  NATS_SECURITY_FILE,
  readNatsCluster,
  serverPaths,
  writeNatsConfigs,
  type NatsClusterSpec,
} from '@drover/certs';
import { isRole, ROLES, type Identity } from '@drover/protocol';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { GlobalArgs } from '../context.js';
import { UsageError } from '@drover/cli-kit';

type DirArgs = GlobalArgs & { dir: string };
type ClusterArgs = DirArgs & {
  'nats-node': string[];
  'nats-cluster': string;
  'route-port': number;
};
type InitArgs = ClusterArgs & {
  'nats-address': string;
  controllers: string;
  hosts: string;
  operators: string;
  viewers: string;
};
type IssueArgs = DirArgs & { role: string; name: string; san: string };
type NatsConfigArgs = DirArgs & { node: string | undefined };

const dirOption = {
  type: 'string',
  demandOption: true,
  describe: 'the certificates directory (made 0700; keys and certificates 0600)',
} as const;

/** `a,b,,c` → [a, b, c]. */
function names(s: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
}

/**
 * `--hosts`: `h1,h2` or `h1=10.0.0.1,h2=10.0.0.2` (a name again adds an address:
 * `h1=10.0.0.1,h1=h1.example`). The addresses go into each agent's certificate, so the deployer
 * that installs the hosts at those addresses keeps them instead of issuing them again.
 */
export function agentHosts(s: string): { agents: string[]; addresses: Record<string, string[]> } {
  const agents: string[] = [];
  const addresses: Record<string, string[]> = {};
  for (const token of names(s)) {
    const eq = token.indexOf('=');
    const name = (eq < 0 ? token : token.slice(0, eq)).trim();
    const address = eq < 0 ? '' : token.slice(eq + 1).trim();
    if (name === '' || (eq >= 0 && address === ''))
      throw usage(`--hosts: ${JSON.stringify(token)} is not NAME or NAME=ADDRESS`);
    if (!agents.includes(name)) agents.push(name);
    if (address !== '') (addresses[name] ??= []).push(address);
  }
  return { agents, addresses };
}

function usage(message: string): Error {
  return new UsageError(message);
}

/** The NATS cluster options (`init` and `nats-cluster`). */
function clusterOptions<T>(y: Argv<T>) {
  return y
    .option('nats-node', {
      type: 'string',
      array: true,
      default: [] as string[],
      describe:
        'a NATS cluster node, NAME=ADDRESS[,ADDRESS...] (repeat for each node, 3 for R3 state): ' +
        'a route certificate and a config with TLS-only routes per node',
    })
    .option('nats-cluster', {
      type: 'string',
      default: 'drover',
      describe: 'the NATS cluster name (cluster.name; the CN of its route certificates)',
    })
    .option('route-port', { type: 'number', default: 6222, describe: 'the NATS route port' });
}

/** `--nats-node n1=10.0.0.5,n1.example ...` → the cluster, or undefined without nodes. */
function clusterSpec(argv: ClusterArgs): NatsClusterSpec | undefined {
  if (argv['nats-node'].length === 0) return undefined;
  const nodes = argv['nats-node'].map((n) => {
    const eq = n.indexOf('=');
    if (eq <= 0) throw usage(`--nats-node takes NAME=ADDRESS[,ADDRESS...], got ${n}`);
    return { name: n.slice(0, eq), addresses: names(n.slice(eq + 1)) };
  });
  return { name: argv['nats-cluster'], nodes, routePort: argv['route-port'] };
}

async function summary(dir: string, ids: readonly Identity[]): Promise<string> {
  const rows = ids.map(
    (id) => `  ${id.role.padEnd(10)} ${id.name.padEnd(16)} ${identityPaths(dir, id).certFile}`,
  );
  const single = await stat(serverPaths(dir).certFile).then(
    () => true,
    () => false,
  );
  const cluster = await readNatsCluster(dir);
  return [
    `CA            ${join(dir, 'ca.crt')}   (keep ca.key offline once everything is issued)`,
    ...(single
      ? [
          `NATS server   ${serverPaths(dir).certFile}`,
          `NATS config   ${join(dir, NATS_SECURITY_FILE)}   (include it in nats-server's config)`,
        ]
      : []),
    ...(cluster
      ? [
          `NATS cluster  ${cluster.name}: routes require TLS and a route certificate of this CA`,
          ...cluster.nodes.map(
            (n) =>
              `  node ${n.name.padEnd(10)} ${serverPaths(dir, n.name).certFile}   config ${natsNodeConfigPath(dir, n.name)}`,
          ),
        ]
      : []),
    ...rows,
  ].join('\n');
}

const init: CommandModule<GlobalArgs, InitArgs> = {
  command: 'init',
  describe: 'Create a cluster CA and certificates for NATS, the controller, agents and operators',
  builder: (y) =>
    clusterOptions(y)
      .option('dir', dirOption)
      .option('nats-address', {
        type: 'string',
        default: '',
        describe:
          'what clients dial to reach a single NATS server: IPs and DNS names, comma-separated ' +
          '(needed unless --nats-node gives a cluster)',
      })
      .option('controllers', {
        type: 'string',
        default: 'controller',
        describe: 'controller identities',
      })
      .option('hosts', {
        type: 'string',
        default: '',
        describe:
          "agents' host ids, comma-separated, each with the address its peers dial " +
          '(NAME=ADDRESS; a name again adds an address): h1=10.0.0.1,h2=10.0.0.2',
      })
      .option('operators', {
        type: 'string',
        default: '',
        describe: 'operators (may change things)',
      })
      .option('viewers', { type: 'string', default: '', describe: 'viewers (may only look)' }),
  handler: async (argv) => {
    const natsCluster = clusterSpec(argv);
    const serverAddresses = names(argv['nats-address']);
    if (serverAddresses.length === 0 && !natsCluster)
      throw usage(
        'certs init needs --nats-address (a single NATS server) or --nats-node (a cluster)',
      );
    const hosts = agentHosts(argv.hosts);
    const ids = await initCluster(argv.dir, {
      serverAddresses,
      controllers: names(argv.controllers),
      agents: hosts.agents,
      agentAddresses: hosts.addresses,
      operators: names(argv.operators),
      viewers: names(argv.viewers),
      ...(natsCluster ? { natsCluster } : {}),
    });
    process.stdout.write(
      argv.json
        ? JSON.stringify({ dir: argv.dir, identities: ids, natsCluster }, null, 2) + '\n'
        : (await summary(argv.dir, ids)) + '\n',
    );
  },
};

const natsCluster: CommandModule<GlobalArgs, ClusterArgs> = {
  command: 'nats-cluster',
  describe: 'Add a NATS cluster (route certificates, per-node configs) to a certificates directory',
  builder: (y) => clusterOptions(y).option('dir', dirOption),
  handler: async (argv) => {
    const spec = clusterSpec(argv);
    if (!spec) throw usage('certs nats-cluster needs --nats-node NAME=ADDRESS for each node');
    const paths = await initNatsCluster(argv.dir, spec);
    process.stdout.write(
      argv.json
        ? JSON.stringify({ dir: argv.dir, natsCluster: spec, configs: paths }, null, 2) + '\n'
        : (await summary(argv.dir, await listIdentities(argv.dir))) + '\n',
    );
  },
};

const issue: CommandModule<GlobalArgs, IssueArgs> = {
  command: 'issue <role> <name>',
  describe: `Issue (or replace) one identity's certificate: role ${ROLES.join('|')}`,
  builder: (y) =>
    y
      .positional('role', { type: 'string', demandOption: true })
      .positional('name', { type: 'string', demandOption: true })
      .option('dir', dirOption)
      .option('san', {
        type: 'string',
        default: '',
        describe: 'subject alternative names (agents: addresses their streams listen on)',
      }),
  handler: async (argv) => {
    if (!isRole(argv.role)) throw usage(`role must be one of ${ROLES.join(', ')}`);
    const id: Identity = { role: argv.role, name: argv.name };
    const files = await issueIdentity(argv.dir, id, { sans: names(argv.san) });
    const confs = await writeNatsConfigs(argv.dir);
    process.stdout.write(
      argv.json
        ? JSON.stringify({ identity: id, ...files, natsConfigs: confs }, null, 2) + '\n'
        : `issued ${id.role} ${id.name}: ${files.certFile}\n` +
            `rewrote ${confs.join(', ')}: reload every nats-server (nats-server --signal reload) to let it in\n`,
    );
  },
};

const ls: CommandModule<GlobalArgs, DirArgs> = {
  command: 'ls',
  describe: 'List the identities with certificates',
  builder: (y) => y.option('dir', dirOption),
  handler: async (argv) => {
    const ids = await listIdentities(argv.dir);
    process.stdout.write(
      argv.json ? JSON.stringify(ids, null, 2) + '\n' : (await summary(argv.dir, ids)) + '\n',
    );
  },
};

const natsConfig: CommandModule<GlobalArgs, NatsConfigArgs> = {
  command: 'nats-config',
  describe:
    "Rewrite every generated NATS config and print the single server's (or, with --node, a " +
    "cluster node's: tls, authorization and the TLS-only cluster block)",
  builder: (y) =>
    y.option('dir', dirOption).option('node', {
      type: 'string',
      describe: 'the NATS cluster node whose config to print',
    }),
  handler: async (argv) => {
    const written = await writeNatsConfigs(argv.dir);
    const want =
      argv.node !== undefined
        ? natsNodeConfigPath(argv.dir, argv.node)
        : join(argv.dir, NATS_SECURITY_FILE);
    if (!written.includes(want)) {
      const cluster = await readNatsCluster(argv.dir);
      throw usage(
        argv.node !== undefined
          ? `no NATS cluster node ${argv.node} in ${argv.dir}` +
              (cluster ? ` (nodes: ${cluster.nodes.map((n) => n.name).join(', ')})` : '')
          : `${argv.dir} has no single NATS server; pass --node` +
              (cluster ? ` (one of ${cluster.nodes.map((n) => n.name).join(', ')})` : ''),
      );
    }
    process.stdout.write(await readFile(want, 'utf8'));
  },
};

export const certsCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'certs',
  describe: 'Certificates and NATS roles: init, issue ROLE NAME, ls, nats-cluster, nats-config',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .command(init)
      .command(issue)
      .command(ls)
      .command(natsCluster)
      .command(natsConfig)
      .demandCommand(1, 'certs: init, issue ROLE NAME, ls, nats-cluster or nats-config'),
  handler: () => {},
};
