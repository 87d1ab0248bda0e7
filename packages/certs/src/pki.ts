/**
 * A cluster CA in a directory and the certificates it issues, made with the `openssl` CLI (Node
 * can make keys but not X.509 certificates). Layout of a certificates directory (0700, every file
 * 0600):
 *
 *   ca.crt  ca.key                 the cluster CA (P-256, 10 years)
 *   server/<name>.crt|.key         a NATS server (with its addresses as SANs)
 *   server/<node>.crt|.key         a NATS cluster node: a route certificate (server and client use,
 *                                  subject `CN=<cluster>,OU=nats-route,O=drover`, its addresses)
 *   <role>/<name>.crt|.key         an identity: controller, agent (name = host id), operator, viewer
 *   nats-security.conf             the nats-server `tls` + `authorization` blocks for all of them
 *   nats-cluster.json              the NATS cluster's name, nodes and route port (when there is one)
 *   nats-security.<node>.conf      a cluster node's `tls` + `authorization` + TLS-only `cluster`
 *
 * A certificate's subject is `O=drover, OU=<role>, CN=<name>`: NATS maps it to the user of that
 * identity, and the role decides its permissions.
 */
import { execFile } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import {
  identityOfSubject,
  IDENTITY_NAME_PATTERN,
  ROLES,
  type Identity,
  type Role,
} from '@drover/protocol';
import {
  checkIdentities,
  natsClusterConfig,
  natsSecurityConfig,
  NATS_ROUTE_OU,
} from './nats-config.js';

/** A certificate, its key and the CA that signed it: what a TLS client or server needs. */
export interface CertFiles {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

/** The file name of the generated NATS security blocks in a certificates directory. */
export const NATS_SECURITY_FILE = 'nats-security.conf';
/** The NATS server certificate's name unless told otherwise. */
export const DEFAULT_SERVER_NAME = 'nats';

const CA_DAYS = 3650;
const LEAF_DAYS = 825;

/** The CA's files in `dir`. */
export function caPaths(dir: string): { certFile: string; keyFile: string } {
  return { certFile: join(dir, 'ca.crt'), keyFile: join(dir, 'ca.key') };
}

/** Where the certificate of `id` lives in `dir`. */
export function identityPaths(dir: string, id: Identity): CertFiles {
  return {
    caFile: caPaths(dir).certFile,
    certFile: join(dir, id.role, `${id.name}.crt`),
    keyFile: join(dir, id.role, `${id.name}.key`),
  };
}

/** Where the NATS server certificate `name` lives in `dir`. */
export function serverPaths(dir: string, name = DEFAULT_SERVER_NAME): CertFiles {
  return {
    caFile: caPaths(dir).certFile,
    certFile: join(dir, 'server', `${name}.crt`),
    keyFile: join(dir, 'server', `${name}.key`),
  };
}

function openssl(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('openssl', [...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      reject(
        new DroverError(
          missing ? ErrorCode.FailedPrecondition : ErrorCode.Internal,
          missing
            ? 'the openssl command is needed to issue certificates (apt-get install openssl)'
            : `openssl ${args[0] ?? ''} failed: ${stderr.trim().split('\n').slice(-3).join(' ')}`,
          { cause: err, details: { args: [...args], stderr: stderr.slice(-2000) } },
        ),
      );
    });
  });
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Make `dir` (and parents) and give it mode 0700 even if it existed. */
async function privateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}

/** A new P-256 key at `path`, mode 0600 (written inside a 0700 directory). */
async function newKey(path: string): Promise<void> {
  await openssl([
    'genpkey',
    '-algorithm',
    'EC',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-out',
    path,
  ]);
  await chmod(path, 0o600);
}

/** An openssl config with a fixed subject and the extensions of one certificate. */
function opensslConfig(subject: { OU: string; CN: string }, extensions: string[]): string {
  return [
    '[req]',
    'distinguished_name = dn',
    'prompt = no',
    '[dn]',
    // This order prints as `CN=...,OU=...,O=drover`, the user name NATS maps (RFC 2253).
    'O = drover',
    `OU = ${subject.OU}`,
    `CN = ${subject.CN}`,
    '[ext]',
    ...extensions,
    '',
  ].join('\n');
}

/**
 * Create the cluster CA in `dir` (made 0700). Refuses when `dir` already has one: a new CA would
 * orphan every certificate issued so far.
 */
export async function initCa(dir: string): Promise<void> {
  const ca = caPaths(dir);
  if ((await exists(ca.certFile)) || (await exists(ca.keyFile)))
    throw new DroverError(ErrorCode.AlreadyExists, `${dir} already has a CA (ca.crt/ca.key)`, {
      details: { dir },
    });
  await privateDir(dir);
  const cfg = join(dir, `.ca.${process.pid}.cnf`);
  await writeFile(
    cfg,
    opensslConfig({ OU: 'ca', CN: `Drover cluster CA ${randomBytes(4).toString('hex')}` }, [
      'basicConstraints = critical, CA:TRUE, pathlen:0',
      'keyUsage = critical, keyCertSign, cRLSign',
      'subjectKeyIdentifier = hash',
    ]),
    { mode: 0o600 },
  );
  try {
    await newKey(ca.keyFile);
    await openssl([
      'req',
      '-x509',
      '-new',
      '-key',
      ca.keyFile,
      '-config',
      cfg,
      '-extensions',
      'ext',
      '-days',
      String(CA_DAYS),
      '-sha256',
      '-out',
      ca.certFile,
    ]);
    await chmod(ca.certFile, 0o600);
  } finally {
    await rm(cfg, { force: true });
  }
}

/** Issue one certificate signed by the CA of `dir`. */
async function issue(
  dir: string,
  files: CertFiles,
  subject: { OU: string; CN: string },
  extensions: string[],
): Promise<CertFiles> {
  const ca = caPaths(dir);
  if (!(await exists(ca.keyFile)))
    throw new DroverError(ErrorCode.FailedPrecondition, `${dir} has no CA: drover certs init`, {
      details: { dir },
    });
  await privateDir(join(files.certFile, '..'));
  const base = join(dir, `.issue.${process.pid}.${randomBytes(4).toString('hex')}`);
  await writeFile(
    `${base}.cnf`,
    opensslConfig(subject, [
      'basicConstraints = critical, CA:FALSE',
      'keyUsage = critical, digitalSignature, keyEncipherment',
      'subjectKeyIdentifier = hash',
      'authorityKeyIdentifier = keyid',
      ...extensions,
    ]),
    { mode: 0o600 },
  );
  try {
    await newKey(files.keyFile);
    await openssl([
      'req',
      '-new',
      '-key',
      files.keyFile,
      '-config',
      `${base}.cnf`,
      '-out',
      `${base}.csr`,
    ]);
    await openssl([
      'x509',
      '-req',
      '-in',
      `${base}.csr`,
      '-CA',
      ca.certFile,
      '-CAkey',
      ca.keyFile,
      '-set_serial',
      `0x${randomBytes(16).toString('hex')}`,
      '-days',
      String(LEAF_DAYS),
      '-sha256',
      '-extfile',
      `${base}.cnf`,
      '-extensions',
      'ext',
      '-out',
      files.certFile,
    ]);
    await chmod(files.certFile, 0o600);
  } finally {
    await rm(`${base}.cnf`, { force: true });
    await rm(`${base}.csr`, { force: true });
  }
  return files;
}

/**
 * Issue (or re-issue: a new key replaces the old) the certificate of `id`. Agents' certificates
 * can also serve agent-to-agent streams (server and client use); `sans` adds subject
 * alternative names (`IP:10.0.0.5`, `DNS:h1.example`) for that.
 */
export async function issueIdentity(
  dir: string,
  id: Identity,
  options: { sans?: readonly string[] } = {},
): Promise<CertFiles> {
  checkIdentities([id]);
  const usage = id.role === 'agent' ? 'clientAuth, serverAuth' : 'clientAuth';
  return issue(dir, identityPaths(dir, id), { OU: id.role, CN: id.name }, [
    `extendedKeyUsage = ${usage}`,
    ...(options.sans?.length ? [`subjectAltName = ${sanList(options.sans)}`] : []),
  ]);
}

/**
 * Issue the certificate of a NATS server. `addresses` are what clients dial: IPs become `IP:`
 * names, anything else `DNS:` (clients check the server's name against them).
 */
export async function issueServer(
  dir: string,
  addresses: readonly string[],
  name = DEFAULT_SERVER_NAME,
): Promise<CertFiles> {
  if (!IDENTITY_NAME_PATTERN.test(name))
    throw new DroverError(ErrorCode.InvalidArgument, `bad server name ${JSON.stringify(name)}`);
  if (addresses.length === 0)
    throw new DroverError(ErrorCode.InvalidArgument, 'a NATS server certificate needs an address');
  return issue(dir, serverPaths(dir, name), { OU: 'server', CN: name }, [
    'extendedKeyUsage = serverAuth',
    // nats.js dialing an IP address checks the name `localhost` (it passes no servername), so
    // the server certificate carries it as well as its addresses.
    `subjectAltName = ${sanList([...new Set([...addresses, 'localhost'])])}`,
  ]);
}

const IP = /^(\d{1,3}(\.\d{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:]*)$/;
const DNS = /^[A-Za-z0-9*]([A-Za-z0-9.-]{0,252})$/;

function sanList(names: readonly string[]): string {
  return names
    .map((n) => {
      if (/^(IP|DNS):/.test(n)) return n;
      if (IP.test(n)) return `IP:${n}`;
      if (DNS.test(n)) return `DNS:${n}`;
      throw new DroverError(ErrorCode.InvalidArgument, `bad address ${JSON.stringify(n)}`);
    })
    .join(', ');
}

/** The identity a certificate file names (its subject), or null if it is not a Drover identity. */
export async function identityOfCertificate(certFile: string): Promise<Identity | null> {
  return identityOfSubject(new X509Certificate(await readFile(certFile)).subject);
}

/** Every identity with a certificate in `dir`, sorted by role then name. */
export async function listIdentities(dir: string): Promise<Identity[]> {
  const out: Identity[] = [];
  for (const role of ROLES) {
    const files = await readdir(join(dir, role)).catch(() => [] as string[]);
    for (const f of files) {
      if (!f.endsWith('.crt')) continue;
      const id = await identityOfCertificate(join(dir, role, f));
      if (id && id.role === role && `${id.name}.crt` === f) out.push(id);
    }
  }
  return checkIdentities(out);
}

/**
 * (Re)write `<dir>/nats-security.conf` for every identity in `dir`, with the server certificate
 * `server`; returns its path. Include it in the server's config (`include nats-security.conf`
 * next to it, or copy its text) and reload the server after issuing new identities.
 */
export async function writeNatsSecurityConfig(
  dir: string,
  server = DEFAULT_SERVER_NAME,
): Promise<string> {
  const text = natsSecurityConfig({
    tls: serverPaths(dir, server),
    identities: await listIdentities(dir),
  });
  const path = join(dir, NATS_SECURITY_FILE);
  await writeFile(path, text, { mode: 0o600 });
  await chmod(path, 0o600);
  return path;
}

/** What `initCluster` issues. */
export interface ClusterCertsOptions {
  /** Addresses of the NATS server (IPs and DNS names clients dial). */
  readonly serverAddresses: readonly string[];
  /** Controller identities. Default one, `controller`. */
  readonly controllers?: readonly string[];
  /** Agents' host ids. */
  readonly agents?: readonly string[];
  /**
   * Each agent's addresses (IPs or DNS names), by host id: its certificate names them, so peers
   * that dial an address (CRIU's page channel) can check whom they reached.
   */
  readonly agentAddresses?: Readonly<Record<string, readonly string[]>>;
  readonly operators?: readonly string[];
  readonly viewers?: readonly string[];
  /**
   * A NATS cluster: a route certificate and a config per node ({@link initNatsCluster}). With
   * it, `serverAddresses` may be empty (no single-server certificate is issued then).
   */
  readonly natsCluster?: NatsClusterSpec;
}

/**
 * A CA, the NATS server's certificate, one certificate per identity and the NATS security config,
 * in a new directory: what `drover certs init` and `drover up` make.
 */
export async function initCluster(dir: string, options: ClusterCertsOptions): Promise<Identity[]> {
  const ids = checkIdentities([
    ...(options.controllers ?? ['controller']).map((name) => ({
      role: 'controller' as Role,
      name,
    })),
    ...(options.agents ?? []).map((name) => ({ role: 'agent' as Role, name })),
    ...(options.operators ?? []).map((name) => ({ role: 'operator' as Role, name })),
    ...(options.viewers ?? []).map((name) => ({ role: 'viewer' as Role, name })),
  ]);
  if (options.natsCluster) checkNatsCluster(options.natsCluster);
  await initCa(dir);
  if (options.serverAddresses.length > 0 || !options.natsCluster)
    await issueServer(dir, options.serverAddresses);
  // One at a time: openssl is quick, and two cores are shared with everything else.
  for (const id of ids) {
    const sans = id.role === 'agent' ? (options.agentAddresses?.[id.name] ?? []) : [];
    await issueIdentity(dir, id, sans.length ? { sans } : {});
  }
  if (options.serverAddresses.length > 0 || !options.natsCluster)
    await writeNatsSecurityConfig(dir);
  if (options.natsCluster) await initNatsCluster(dir, options.natsCluster);
  return ids;
}

/** One node of a NATS cluster. */
export interface NatsNode {
  /** Its server name (`server_name`, and its certificate's file name `server/<name>.crt`). */
  readonly name: string;
  /** What clients and the other nodes dial: IPs and DNS names; routes go to the first. */
  readonly addresses: readonly string[];
}

/** A NATS cluster whose routes require TLS. */
export interface NatsClusterSpec {
  /** The cluster's name: `cluster.name` and the CN of its route certificates. */
  readonly name: string;
  /** Two or more nodes (three for replicated JetStream state). */
  readonly nodes: readonly NatsNode[];
  /** The port every node accepts routes on. Default 6222. */
  readonly routePort?: number;
}

/** The file that records the cluster of a certificates directory. */
export const NATS_CLUSTER_FILE = 'nats-cluster.json';
/** The route port unless told otherwise. */
export const DEFAULT_ROUTE_PORT = 6222;

/** Where the generated config of cluster node `node` lives in `dir`. */
export function natsNodeConfigPath(dir: string, node: string): string {
  return join(dir, `nats-security.${node}.conf`);
}

/** Check a cluster spec: valid distinct names, an address per node, a route port. */
export function checkNatsCluster(spec: NatsClusterSpec): void {
  const bad = (m: string): DroverError =>
    new DroverError(ErrorCode.InvalidArgument, m, { details: { cluster: spec.name } });
  if (!IDENTITY_NAME_PATTERN.test(spec.name))
    throw bad(`bad NATS cluster name ${JSON.stringify(spec.name)}: letters, digits, _ and - only`);
  if (spec.nodes.length < 2) throw bad('a NATS cluster needs at least 2 nodes');
  const port = spec.routePort ?? DEFAULT_ROUTE_PORT;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(`bad route port ${port}`);
  const seen = new Set<string>();
  for (const n of spec.nodes) {
    checkNatsNode(n);
    if (seen.has(n.name)) throw bad(`NATS node ${n.name} is listed twice`);
    seen.add(n.name);
  }
}

/** Check one node: a valid name that is not the single server's, valid addresses. */
function checkNatsNode(n: NatsNode): void {
  const bad = (m: string): DroverError =>
    new DroverError(ErrorCode.InvalidArgument, m, { details: { node: n.name } });
  if (!IDENTITY_NAME_PATTERN.test(n.name))
    throw bad(`bad NATS node name ${JSON.stringify(n.name)}: letters, digits, _ and - only`);
  if (n.name === DEFAULT_SERVER_NAME)
    throw bad(`a NATS node may not be named ${DEFAULT_SERVER_NAME} (the single server's name)`);
  if (n.addresses.length === 0) throw bad(`NATS node ${n.name} needs an address`);
  sanList(n.addresses);
}

/** `host:port`, with an IPv6 address in brackets. */
function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Issue (or re-issue) the route certificate of cluster node `node`. One certificate per node,
 * not one shared by all: each node holds only its own key and is named only by its own
 * addresses. They share one subject (`CN=<cluster>,OU=nats-route,O=drover`) because NATS 2.9
 * maps every route to a single user. Extended key usage server *and* client: a node accepts
 * routes and dials them with the same certificate, and also serves clients with it.
 */
export async function issueNatsNode(
  dir: string,
  clusterName: string,
  node: NatsNode,
): Promise<CertFiles> {
  if (!IDENTITY_NAME_PATTERN.test(clusterName))
    throw new DroverError(
      ErrorCode.InvalidArgument,
      `bad NATS cluster name ${JSON.stringify(clusterName)}: letters, digits, _ and - only`,
    );
  checkNatsNode(node);
  return issue(dir, serverPaths(dir, node.name), { OU: NATS_ROUTE_OU, CN: clusterName }, [
    'extendedKeyUsage = serverAuth, clientAuth',
    // localhost: see issueServer.
    `subjectAltName = ${sanList([...new Set([...node.addresses, 'localhost'])])}`,
  ]);
}

/** The cluster recorded in `dir`, or null when it has none. */
export async function readNatsCluster(dir: string): Promise<NatsClusterSpec | null> {
  const text = await readFile(join(dir, NATS_CLUSTER_FILE), 'utf8').catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  });
  if (text === null) return null;
  const spec = JSON.parse(text) as NatsClusterSpec;
  checkNatsCluster(spec);
  return spec;
}

/**
 * (Re)write `<dir>/nats-security.<node>.conf` for every node of the cluster recorded in `dir`:
 * the node's client `tls` (its route certificate, which also serves clients), the
 * `authorization` of every identity in `dir`, and its TLS-only `cluster` block (listen on its
 * first address, routes to the others' first addresses). Returns the paths (none without a
 * cluster). Include a node's file in its config, which sets `server_name`, `listen` and
 * `jetstream` and no `cluster` of its own.
 */
export async function writeNatsClusterConfigs(dir: string): Promise<string[]> {
  const spec = await readNatsCluster(dir);
  if (!spec) return [];
  const identities = await listIdentities(dir);
  const port = spec.routePort ?? DEFAULT_ROUTE_PORT;
  const first = (n: NatsNode): string => n.addresses[0] ?? '';
  const paths: string[] = [];
  for (const node of spec.nodes) {
    const tls = serverPaths(dir, node.name);
    const text =
      natsSecurityConfig({ tls, identities }) +
      natsClusterConfig({
        clusterName: spec.name,
        tls,
        listen: hostPort(first(node), port),
        routes: spec.nodes.filter((n) => n !== node).map((n) => hostPort(first(n), port)),
      });
    const path = natsNodeConfigPath(dir, node.name);
    await writeFile(path, text, { mode: 0o600 });
    await chmod(path, 0o600);
    paths.push(path);
  }
  return paths;
}

/**
 * Make `dir`'s NATS cluster: a route certificate per node, the record `nats-cluster.json`, and
 * each node's config. Refuses when `dir` already records a cluster (re-issuing would replace the
 * running nodes' keys); returns the nodes' config paths.
 */
export async function initNatsCluster(dir: string, spec: NatsClusterSpec): Promise<string[]> {
  checkNatsCluster(spec);
  if (await exists(join(dir, NATS_CLUSTER_FILE)))
    throw new DroverError(ErrorCode.AlreadyExists, `${dir} already has a NATS cluster`, {
      details: { dir },
    });
  for (const node of spec.nodes) await issueNatsNode(dir, spec.name, node);
  const record: NatsClusterSpec = {
    name: spec.name,
    nodes: spec.nodes.map((n) => ({ name: n.name, addresses: [...n.addresses] })),
    routePort: spec.routePort ?? DEFAULT_ROUTE_PORT,
  };
  const path = join(dir, NATS_CLUSTER_FILE);
  await writeFile(path, JSON.stringify(record, null, 2) + '\n', { mode: 0o600 });
  await chmod(path, 0o600);
  return writeNatsClusterConfigs(dir);
}

/**
 * Rewrite every generated NATS config of `dir`: `nats-security.conf` when it has a single-server
 * certificate, and each cluster node's. What to call after issuing an identity.
 */
export async function writeNatsConfigs(dir: string): Promise<string[]> {
  const single = (await exists(serverPaths(dir).certFile))
    ? [await writeNatsSecurityConfig(dir)]
    : [];
  return [...single, ...(await writeNatsClusterConfigs(dir))];
}
