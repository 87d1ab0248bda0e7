/**
 * `drover certs init|issue|ls|nats-config`: the cluster CA, certificates for the controller,
 * agents, operators and viewers, and the NATS server configuration that holds each to its role.
 * Runs locally (no NATS); issuing goes through the `openssl` command (`@drover/certs`).
 */
import type { Argv, CommandModule } from 'yargs';
import {
  identityPaths,
  initCluster,
  issueIdentity,
  listIdentities,
  NATS_SECURITY_FILE,
  serverPaths,
  writeNatsSecurityConfig,
} from '@drover/certs';
import { isRole, ROLES, type Identity } from '@drover/protocol';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { GlobalArgs } from '../context.js';

type DirArgs = GlobalArgs & { dir: string };
type InitArgs = DirArgs & {
  'nats-address': string;
  controllers: string;
  hosts: string;
  operators: string;
  viewers: string;
};
type IssueArgs = DirArgs & { role: string; name: string; san: string };

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

function usage(message: string): Error {
  return Object.assign(new Error(message), { usage: true });
}

function summary(dir: string, ids: readonly Identity[]): string {
  const rows = ids.map(
    (id) => `  ${id.role.padEnd(10)} ${id.name.padEnd(16)} ${identityPaths(dir, id).certFile}`,
  );
  return [
    `CA            ${join(dir, 'ca.crt')}   (keep ca.key offline once everything is issued)`,
    `NATS server   ${serverPaths(dir).certFile}`,
    `NATS config   ${join(dir, NATS_SECURITY_FILE)}   (include it in nats-server's config)`,
    ...rows,
  ].join('\n');
}

const init: CommandModule<GlobalArgs, InitArgs> = {
  command: 'init',
  describe: 'Create a cluster CA and certificates for NATS, the controller, agents and operators',
  builder: (y) =>
    y
      .option('dir', dirOption)
      .option('nats-address', {
        type: 'string',
        demandOption: true,
        describe: 'what clients dial to reach NATS: IPs and DNS names, comma-separated',
      })
      .option('controllers', {
        type: 'string',
        default: 'controller',
        describe: 'controller identities',
      })
      .option('hosts', {
        type: 'string',
        default: '',
        describe: "agents' host ids, comma-separated",
      })
      .option('operators', {
        type: 'string',
        default: '',
        describe: 'operators (may change things)',
      })
      .option('viewers', { type: 'string', default: '', describe: 'viewers (may only look)' }),
  handler: async (argv) => {
    const ids = await initCluster(argv.dir, {
      serverAddresses: names(argv['nats-address']),
      controllers: names(argv.controllers),
      agents: names(argv.hosts),
      operators: names(argv.operators),
      viewers: names(argv.viewers),
    });
    process.stdout.write(
      argv.json
        ? JSON.stringify({ dir: argv.dir, identities: ids }, null, 2) + '\n'
        : summary(argv.dir, ids) + '\n',
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
    const conf = await writeNatsSecurityConfig(argv.dir);
    process.stdout.write(
      argv.json
        ? JSON.stringify({ identity: id, ...files, natsConfig: conf }, null, 2) + '\n'
        : `issued ${id.role} ${id.name}: ${files.certFile}\n` +
            `rewrote ${conf}: reload nats-server (nats-server --signal reload) to let it in\n`,
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
      argv.json ? JSON.stringify(ids, null, 2) + '\n' : summary(argv.dir, ids) + '\n',
    );
  },
};

const natsConfig: CommandModule<GlobalArgs, DirArgs> = {
  command: 'nats-config',
  describe: "Rewrite and print the NATS server's tls and authorization blocks",
  builder: (y) => y.option('dir', dirOption),
  handler: async (argv) => {
    process.stdout.write(await readFile(await writeNatsSecurityConfig(argv.dir), 'utf8'));
  },
};

export const certsCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'certs',
  describe: 'Certificates and NATS roles: init, issue ROLE NAME, ls, nats-config',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .command(init)
      .command(issue)
      .command(ls)
      .command(natsConfig)
      .demandCommand(1, 'certs: init, issue ROLE NAME, ls or nats-config'),
  handler: () => {},
};
