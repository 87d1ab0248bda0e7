/**
 * The NATS server's files in a certificates directory: the generated `nats-security.conf` (the
 * `tls` and `authorization` of every identity that has a certificate there), and a NATS
 * cluster's record, route certificates and per-node configs. Regenerated after every issue or
 * revocation: an identity without a certificate in the directory has no NATS user.
 */
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import { IDENTITY_NAME_PATTERN } from '@drover/protocol';
import {
  DEFAULT_SERVER_NAME,
  issue,
  listIdentities,
  sanList,
  serverPaths,
  type CertFiles,
} from './issue.js';
import { natsClusterConfig, natsSecurityConfig, NATS_ROUTE_OU } from './nats-config.js';
import { exists } from './openssl.js';

/** The file name of the generated NATS security blocks in a certificates directory. */
export const NATS_SECURITY_FILE = 'nats-security.conf';

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
