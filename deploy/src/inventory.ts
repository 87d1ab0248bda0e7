/**
 * The inventory: one YAML file naming the hosts (address, SSH port, user, key, pinned host key,
 * labels), NATS and the controller, with defaults and per-host overrides. Parsed, validated
 * (every problem listed at once) and compiled into a read-only `Inventory`.
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { CORE_SCHEMA, load, YAMLException } from 'js-yaml';
import { CONTEXT_NAME_PATTERN, DroverError, ErrorCode, type LogLevel } from '@drover/common';
import { ID_PATTERN, IDENTITY_NAME_PATTERN, IFNAME_PATTERN } from '@drover/protocol';
import { parseHostKey, type PinnedHostKey } from './host-key.js';
import {
  checkKeys,
  int,
  isObject,
  list,
  localPath,
  oneOf,
  Problems,
  secretFile,
  str,
  type Raw,
} from './inventory-fields.js';

export { fingerprintOf, parseHostKey, type PinnedHostKey } from './host-key.js';

/** TLS files on the operator's machine (uploaded to each host where the agent needs them). */
export interface TlsFiles {
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

/** How agents reach NATS. Secrets are kept in memory only and written to hosts with mode 0600. */
export interface NatsInventory {
  readonly servers: readonly string[];
  readonly tls?: TlsFiles;
  readonly user?: string;
  readonly password?: string;
  readonly token?: string;
  /** A `.creds` file on the operator's machine. */
  readonly credsFile?: string;
  /**
   * A command (run by `sh -c` on the operator's machine) that makes nats-server load the
   * regenerated security config, run after it changed; `$DROVER_NATS_SECURITY_CONF` names it.
   */
  readonly reload?: string;
  /** The NATS servers the deployer runs itself (null: NATS runs another way, at `servers`). */
  readonly deploy: NatsDeployment | null;
}

/**
 * NATS servers the deployer installs, configures and upgrades (`nats.hosts`): one, or a
 * JetStream cluster of three, on inventory hosts, each listening on its host's address.
 */
export interface NatsDeployment {
  /** Inventory host names, in order (routes and client URLs follow it). */
  readonly hosts: readonly string[];
  /** The client port (TLS). */
  readonly port: number;
  /** The route port (cluster of three only; TLS with route certificates). */
  readonly routePort: number;
  /** `cluster.name`, and the CN of the route certificates. */
  readonly cluster: string;
}

/** How this machine reaches the controller (through NATS), and how long a heartbeat may take. */
export interface ControllerInventory {
  readonly servers: readonly string[];
  readonly heartbeatTimeoutMs: number;
  /**
   * The operator identity (in the certificates directory) the deployer reaches the controller
   * as; issued when missing. Default `deployer`.
   */
  readonly operator: string;
  /**
   * Inventory hosts the deployer runs a controller on (`controller.hosts`; several: HA by the
   * leadership lease). Empty: the controller runs another way.
   */
  readonly hosts: readonly string[];
  /** The deployed controllers' job network (their `jobNetwork`); null: `--net host` jobs only. */
  readonly jobNetwork: { subnet: string; gateway?: string; range?: string } | null;
  /** The deployed controllers' log level. */
  readonly logLevel: LogLevel;
}

/** The agent's settings on one host (compiled into its JSON config file). */
export interface AgentSettings {
  readonly heartbeatMs: number;
  /** `address:port` the migration stream listens on (peers connect to it). */
  readonly streamListen: string;
  readonly logLevel: LogLevel;
  readonly reserveMemoryMiB: number | null;
  readonly maxJobs: number | null;
  readonly cgroupParent: string | null;
  /** The bridge on the job segment jobs hang off (docs/NETWORK.md); null: the agent's default. */
  readonly jobBridge: string | null;
  /** `ADDRESS:PORT` the agent serves Prometheus metrics on (docs/OBSERVABILITY.md); null: off. */
  readonly metricsAddr: string | null;
  /** Mutual TLS for agent-to-agent streams: files on the operator's machine. */
  readonly streamTls: Required<TlsFiles> | null;
}

/** How the agent runs on the host: a systemd unit, or the deployer's own supervisor. */
export const ServiceMode = { auto: 'auto', systemd: 'systemd', supervisor: 'supervisor' } as const;
export type ServiceMode = (typeof ServiceMode)[keyof typeof ServiceMode];

/** What `install` runs of deploy/setup-host.sh: all of it, all but the apt step, or nothing. */
export const SetupMode = { full: 'full', skipPackages: 'skip-packages', none: 'none' } as const;
export type SetupMode = (typeof SetupMode)[keyof typeof SetupMode];

/** One host with defaults applied. */
export interface HostEntry {
  /** The host id: the agent's `--host-id` and the controller's name for it. */
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly user: string;
  /** Private key on the operator's machine; without it the SSH agent (`SSH_AUTH_SOCK`) is used. */
  readonly key: string | null;
  readonly hostKey: PinnedHostKey;
  readonly labels: Readonly<Record<string, string>>;
  readonly connectTimeoutMs: number;
  /** Where releases, config, pid files and logs live on the host. */
  readonly installRoot: string;
  /** The agent's state directory; the same path on every host (jobs keep their paths). */
  readonly stateDir: string;
  /** The host's node binary; found on its PATH when null. */
  readonly node: string | null;
  readonly setup: SetupMode;
  readonly service: ServiceMode;
  readonly agent: AgentSettings;
}

/** A validated inventory. */
export interface Inventory {
  /** The file it was read from (absolute). */
  readonly path: string;
  readonly nats: NatsInventory;
  readonly controller: ControllerInventory;
  readonly hosts: readonly HostEntry[];
  /**
   * The certificates directory on the operator's machine (`drover certs init` made it, with the
   * CA): the deployer issues each host's agent certificate from it and uploads it. Null: none,
   * and `install`/`upgrade` refuse unless `--insecure`.
   */
  readonly certs: string | null;
  /**
   * The context `install` writes for the CLI (`drover --context NAME`): the inventory's
   * `context`, else its file name without extension.
   */
  readonly context: string;
}

/** What the command line overrides in an inventory. */
export interface InventoryOverrides {
  /** `--certs DIR` (relative to the working directory). */
  readonly certs?: string;
}

const TOP_KEYS = ['certs', 'context', 'nats', 'controller', 'defaults', 'hosts'];
const NATS_KEYS = [
  'servers',
  'tls',
  'user',
  'password',
  'passwordFile',
  'token',
  'tokenFile',
  'credsFile',
  'reload',
  'hosts',
  'port',
  'routePort',
  'cluster',
];
const TLS_KEYS = ['caFile', 'certFile', 'keyFile'];
const CONTROLLER_KEYS = [
  'nats',
  'heartbeatTimeoutSec',
  'operator',
  'hosts',
  'jobNetwork',
  'logLevel',
];
const JOB_NETWORK_KEYS = ['subnet', 'gateway', 'range'];
const HOST_SETTINGS = [
  'port',
  'user',
  'key',
  'connectTimeoutSec',
  'installRoot',
  'stateDir',
  'node',
  'setup',
  'service',
  'labels',
  'agent',
];
const HOST_ONLY = ['name', 'address', 'hostKey'];
const AGENT_KEYS = [
  'heartbeatMs',
  'streamPort',
  'streamListen',
  'logLevel',
  'reserveMemoryMiB',
  'maxJobs',
  'cgroupParent',
  'jobBridge',
  'metricsAddr',
  'streamTls',
];
const LOG_LEVELS: readonly string[] = ['debug', 'info', 'warn', 'error'];
const SAFE_REMOTE_PATH = /^(\/[A-Za-z0-9._+-]+){2,}$/;
/** Defaults for a host's settings. */
const DEFAULTS = {
  port: 22,
  user: 'root',
  connectTimeoutSec: 10,
  installRoot: '/opt/drover',
  stateDir: '/var/lib/drover',
  setup: SetupMode.full as SetupMode,
  service: ServiceMode.auto as ServiceMode,
  heartbeatMs: 2000,
  streamPort: 7070,
  logLevel: 'info' as LogLevel,
  heartbeatTimeoutSec: 60,
  operator: 'deployer',
  natsPort: 4222,
  natsRoutePort: 6222,
  natsCluster: 'drover',
};

function tlsFiles(p: Problems, where: string, v: unknown, base: string): TlsFiles | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) {
    p.add(where, 'expected a map of caFile, certFile, keyFile');
    return undefined;
  }
  checkKeys(p, where, v, TLS_KEYS);
  const out: { caFile?: string; certFile?: string; keyFile?: string } = {};
  for (const k of TLS_KEYS as (keyof typeof out)[]) {
    const s = str(p, `${where}.${k}`, v[k]);
    if (s !== undefined) out[k] = localPath(base, s);
  }
  if ((out.certFile === undefined) !== (out.keyFile === undefined)) {
    p.add(where, 'certFile and keyFile go together');
  }
  return out;
}

function compileNats(p: Problems, v: unknown, base: string): NatsInventory {
  if (!isObject(v)) {
    p.add('nats', 'required: a map with at least `servers` (how agents reach NATS)');
    return { servers: [], deploy: null };
  }
  checkKeys(p, 'nats', v, NATS_KEYS);
  const servers = list(p, 'nats.servers', v.servers);
  const deploy = compileNatsDeployment(p, v);
  if (!servers && !deploy)
    p.add('nats.servers', 'required (or nats.hosts: NATS run by the deployer)');
  const tls = tlsFiles(p, 'nats.tls', v.tls, base);
  const user = str(p, 'nats.user', v.user);
  let password = str(p, 'nats.password', v.password);
  const passwordFile = str(p, 'nats.passwordFile', v.passwordFile);
  if (passwordFile !== undefined) {
    if (password !== undefined) p.add('nats', 'password and passwordFile exclude each other');
    password = secretFile(p, 'nats.passwordFile', localPath(base, passwordFile));
  }
  let token = str(p, 'nats.token', v.token);
  const tokenFile = str(p, 'nats.tokenFile', v.tokenFile);
  if (tokenFile !== undefined) {
    if (token !== undefined) p.add('nats', 'token and tokenFile exclude each other');
    token = secretFile(p, 'nats.tokenFile', localPath(base, tokenFile));
  }
  const creds = str(p, 'nats.credsFile', v.credsFile);
  const reload = str(p, 'nats.reload', v.reload);
  if ((user === undefined) !== (password === undefined)) {
    p.add('nats', 'user and password go together');
  }
  return {
    servers: servers ?? [],
    ...(tls ? { tls } : {}),
    ...(user !== undefined ? { user } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(token !== undefined ? { token } : {}),
    ...(creds !== undefined ? { credsFile: localPath(base, creds) } : {}),
    ...(reload !== undefined ? { reload } : {}),
    deploy,
  };
}

/** `nats.hosts` and its ports: the NATS servers the deployer runs, or null. */
function compileNatsDeployment(p: Problems, v: Raw): NatsDeployment | null {
  const hosts = list(p, 'nats.hosts', v.hosts);
  if (hosts === undefined) {
    for (const k of ['port', 'routePort', 'cluster'])
      if (v[k] !== undefined) p.add(`nats.${k}`, 'only with nats.hosts');
    return null;
  }
  if (hosts.length !== 1 && hosts.length !== 3)
    p.add('nats.hosts', `1 or 3 hosts (a JetStream cluster needs 3), got ${hosts.length}`);
  if (new Set(hosts).size !== hosts.length) p.add('nats.hosts', 'a host is named twice');
  for (const k of ['tls', 'user', 'password', 'passwordFile', 'token', 'tokenFile', 'credsFile'])
    if (v[k] !== undefined)
      p.add(`nats.${k}`, 'not with nats.hosts: the deployed NATS admits certificates only');
  if (v.reload !== undefined)
    p.add('nats.reload', 'not with nats.hosts: the deployer reloads the NATS it runs');
  const cluster = str(p, 'nats.cluster', v.cluster) ?? DEFAULTS.natsCluster;
  if (!IDENTITY_NAME_PATTERN.test(cluster))
    p.add('nats.cluster', `letters, digits, _ and - only, got ${cluster}`);
  return {
    hosts,
    port: int(p, 'nats.port', v.port, 1, 65535) ?? DEFAULTS.natsPort,
    routePort: int(p, 'nats.routePort', v.routePort, 1, 65535) ?? DEFAULTS.natsRoutePort,
    cluster,
  };
}

/** `controller.jobNetwork`: the deployed controllers' job network, or null. */
function compileJobNetwork(p: Problems, v: unknown): ControllerInventory['jobNetwork'] {
  if (v === undefined || v === null) return null;
  if (!isObject(v)) {
    p.add('controller.jobNetwork', 'expected a map of subnet, gateway, range');
    return null;
  }
  checkKeys(p, 'controller.jobNetwork', v, JOB_NETWORK_KEYS);
  const subnet = str(p, 'controller.jobNetwork.subnet', v.subnet);
  if (subnet === undefined) p.add('controller.jobNetwork', 'subnet is required');
  else if (!/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(subnet))
    p.add('controller.jobNetwork.subnet', `expected an IPv4 CIDR, got ${subnet}`);
  const gateway = str(p, 'controller.jobNetwork.gateway', v.gateway);
  const range = str(p, 'controller.jobNetwork.range', v.range);
  return {
    subnet: subnet ?? '',
    ...(gateway !== undefined ? { gateway } : {}),
    ...(range !== undefined ? { range } : {}),
  };
}

function remotePath(p: Problems, where: string, v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  // These directories are removed by `uninstall`: never `/`, never a top-level directory.
  if (!SAFE_REMOTE_PATH.test(v) || v.split('/').includes('..')) {
    p.add(where, `must be an absolute path of at least two plain components, got ${v}`);
    return undefined;
  }
  return v;
}

/** A host's raw settings: defaults, then the host's own keys (agent and labels merged by key). */
function mergeSettings(defaults: Raw, host: Raw): Raw {
  const merged: Raw = { ...defaults, ...host };
  for (const k of ['agent', 'labels']) {
    if (isObject(defaults[k]) && isObject(host[k])) merged[k] = { ...defaults[k], ...host[k] };
  }
  return merged;
}

function compileAgent(p: Problems, where: string, v: unknown, address: string, base: string) {
  const a = v === undefined || v === null ? {} : v;
  if (!isObject(a)) {
    p.add(where, 'expected a map');
    return null;
  }
  checkKeys(p, where, a, AGENT_KEYS);
  const port = int(p, `${where}.streamPort`, a.streamPort, 1, 65535) ?? DEFAULTS.streamPort;
  const streamListen = str(p, `${where}.streamListen`, a.streamListen) ?? `${address}:${port}`;
  if (!/^[^\s:]+:\d+$/.test(streamListen)) {
    p.add(`${where}.streamListen`, `expected ADDRESS:PORT, got ${streamListen}`);
  }
  const tls = tlsFiles(p, `${where}.streamTls`, a.streamTls, base);
  if (tls && (!tls.caFile || !tls.certFile || !tls.keyFile)) {
    p.add(`${where}.streamTls`, 'needs caFile, certFile and keyFile');
  }
  const cgroupParent = str(p, `${where}.cgroupParent`, a.cgroupParent);
  if (cgroupParent !== undefined && !ID_PATTERN.test(cgroupParent)) {
    p.add(`${where}.cgroupParent`, `unsafe name ${cgroupParent}`);
  }
  const jobBridge = str(p, `${where}.jobBridge`, a.jobBridge);
  if (jobBridge !== undefined && !IFNAME_PATTERN.test(jobBridge)) {
    p.add(`${where}.jobBridge`, `not an interface name: ${jobBridge}`);
  }
  const metricsAddr = str(p, `${where}.metricsAddr`, a.metricsAddr);
  if (metricsAddr !== undefined && !/^(?:\[[^\]]+\]|[^\s:[\]]+):\d{1,5}$/.test(metricsAddr)) {
    p.add(`${where}.metricsAddr`, `expected ADDRESS:PORT, got ${metricsAddr}`);
  }
  return {
    heartbeatMs:
      int(p, `${where}.heartbeatMs`, a.heartbeatMs, 100, 600_000) ?? DEFAULTS.heartbeatMs,
    streamListen,
    logLevel:
      oneOf(p, `${where}.logLevel`, a.logLevel, LOG_LEVELS as LogLevel[]) ?? DEFAULTS.logLevel,
    reserveMemoryMiB: int(p, `${where}.reserveMemoryMiB`, a.reserveMemoryMiB, 0, 1 << 24) ?? null,
    maxJobs: int(p, `${where}.maxJobs`, a.maxJobs, 0, 1_000_000) ?? null,
    cgroupParent: cgroupParent ?? null,
    jobBridge: jobBridge ?? null,
    metricsAddr: metricsAddr ?? null,
    streamTls: tls?.caFile && tls.certFile && tls.keyFile ? (tls as Required<TlsFiles>) : null,
  };
}

function compileHost(
  p: Problems,
  index: number,
  raw: unknown,
  defaults: Raw,
  base: string,
): HostEntry | null {
  if (!isObject(raw)) {
    p.add(`hosts[${index}]`, 'expected a map with name, address and hostKey');
    return null;
  }
  const name = str(p, `hosts[${index}].name`, raw.name);
  const where = name ? `hosts[${index}] (${name})` : `hosts[${index}]`;
  checkKeys(p, where, raw, [...HOST_ONLY, ...HOST_SETTINGS]);
  if (name === undefined) p.add(where, 'name is required');
  else if (!ID_PATTERN.test(name)) p.add(`${where}.name`, `unsafe host id ${name}`);
  const address = str(p, `${where}.address`, raw.address);
  if (address === undefined) p.add(where, 'address is required');
  const keyText = str(p, `${where}.hostKey`, raw.hostKey);
  let hostKey: PinnedHostKey | null = null;
  if (keyText === undefined) {
    p.add(where, 'hostKey is required: pin the host key (`drover-deploy keyscan` prints it)');
  } else {
    hostKey = parseHostKey(keyText);
    if (!hostKey)
      p.add(`${where}.hostKey`, 'expected an OpenSSH public key line or a SHA256: fingerprint');
  }
  const s = mergeSettings(defaults, raw);
  const key = str(p, `${where}.key`, s.key);
  const labels: Record<string, string> = {};
  if (s.labels !== undefined) {
    if (!isObject(s.labels)) p.add(`${where}.labels`, 'expected a map of strings');
    else
      for (const [k, v] of Object.entries(s.labels)) {
        const lv = str(p, `${where}.labels.${k}`, v);
        if (lv !== undefined) labels[k] = lv;
      }
  }
  const node = str(p, `${where}.node`, s.node);
  if (node !== undefined && !node.startsWith('/')) p.add(`${where}.node`, 'must be absolute');
  const installRoot = remotePath(
    p,
    `${where}.installRoot`,
    str(p, `${where}.installRoot`, s.installRoot) ?? DEFAULTS.installRoot,
  );
  const stateDir = remotePath(
    p,
    `${where}.stateDir`,
    str(p, `${where}.stateDir`, s.stateDir) ?? DEFAULTS.stateDir,
  );
  if (installRoot && stateDir) {
    const inside = (a: string, b: string): boolean => a === b || a.startsWith(`${b}/`);
    if (inside(installRoot, stateDir) || inside(stateDir, installRoot)) {
      p.add(
        where,
        `installRoot ${installRoot} and stateDir ${stateDir} must not contain each other`,
      );
    }
  }
  const agent = compileAgent(p, `${where}.agent`, s.agent, address ?? '', base);
  const port = int(p, `${where}.port`, s.port, 1, 65535) ?? DEFAULTS.port;
  const user = str(p, `${where}.user`, s.user) ?? DEFAULTS.user;
  const connectTimeoutSec =
    int(p, `${where}.connectTimeoutSec`, s.connectTimeoutSec, 1, 600) ?? DEFAULTS.connectTimeoutSec;
  const setup = oneOf(p, `${where}.setup`, s.setup, Object.values(SetupMode)) ?? DEFAULTS.setup;
  const service =
    oneOf(p, `${where}.service`, s.service, Object.values(ServiceMode)) ?? DEFAULTS.service;
  if (!name || !address || !hostKey || !installRoot || !stateDir || !agent) return null;
  return {
    name,
    address,
    port,
    user,
    key: key === undefined ? null : localPath(base, key),
    hostKey,
    labels,
    connectTimeoutMs: connectTimeoutSec * 1000,
    installRoot,
    stateDir,
    node: node ?? null,
    setup,
    service,
    agent,
  };
}

/** The certificates directory: `--certs` (relative to the working directory), else `certs:`. */
function compileCerts(p: Problems, v: unknown, base: string, o: InventoryOverrides): string | null {
  if (o.certs !== undefined) return resolve(o.certs);
  const dir = str(p, 'certs', v);
  return dir === undefined ? null : localPath(base, dir);
}

/**
 * Validate a parsed inventory document; `path` is where it came from (relative paths), and
 * `overrides` what the command line says instead.
 */
export function compileInventory(
  doc: unknown,
  path: string,
  overrides: InventoryOverrides = {},
): Inventory {
  const base = dirname(path);
  const p = new Problems();
  if (!isObject(doc)) {
    throw new DroverError(ErrorCode.InvalidArgument, `inventory ${path}: expected a YAML map`);
  }
  checkKeys(p, 'inventory', doc, TOP_KEYS);
  const certs = compileCerts(p, doc.certs, base, overrides);
  let nats = compileNats(p, doc.nats, base);
  if (certs !== null && nats.tls)
    p.add('nats.tls', 'not with `certs`: the deployer issues and uploads each agent its own');
  const ctl = doc.controller ?? {};
  let controller: ControllerInventory = {
    servers: nats.servers,
    heartbeatTimeoutMs: DEFAULTS.heartbeatTimeoutSec * 1000,
    operator: DEFAULTS.operator,
    hosts: [],
    jobNetwork: null,
    logLevel: DEFAULTS.logLevel,
  };
  if (!isObject(ctl)) p.add('controller', 'expected a map');
  else {
    checkKeys(p, 'controller', ctl, CONTROLLER_KEYS);
    controller = {
      servers: list(p, 'controller.nats', ctl.nats) ?? nats.servers,
      heartbeatTimeoutMs:
        (int(p, 'controller.heartbeatTimeoutSec', ctl.heartbeatTimeoutSec, 1, 3600) ??
          DEFAULTS.heartbeatTimeoutSec) * 1000,
      operator: str(p, 'controller.operator', ctl.operator) ?? DEFAULTS.operator,
      hosts: list(p, 'controller.hosts', ctl.hosts) ?? [],
      jobNetwork: compileJobNetwork(p, ctl.jobNetwork),
      logLevel:
        oneOf(p, 'controller.logLevel', ctl.logLevel, LOG_LEVELS as LogLevel[]) ??
        DEFAULTS.logLevel,
    };
    if (new Set(controller.hosts).size !== controller.hosts.length)
      p.add('controller.hosts', 'a host is named twice');
    if (!IDENTITY_NAME_PATTERN.test(controller.operator))
      p.add('controller.operator', `bad identity name ${controller.operator}`);
  }
  const defaults = doc.defaults ?? {};
  if (!isObject(defaults)) p.add('defaults', 'expected a map');
  else checkKeys(p, 'defaults', defaults, HOST_SETTINGS);
  const hosts: HostEntry[] = [];
  if (!Array.isArray(doc.hosts) || doc.hosts.length === 0) {
    p.add('hosts', 'required: a list of hosts');
  } else {
    doc.hosts.forEach((raw, i) => {
      const h = compileHost(p, i, raw, isObject(defaults) ? defaults : {}, base);
      if (h) hosts.push(h);
    });
  }
  const seen = new Map<string, string>();
  for (const h of hosts) {
    for (const [kind, value] of [
      ['name', h.name],
      ['address', `${h.address}:${h.port}`],
    ] as const) {
      const key = `${kind}=${value}`;
      if (seen.has(key))
        p.add(`hosts (${h.name})`, `duplicate ${kind} ${value} (also ${seen.get(key)})`);
      else seen.set(key, h.name);
    }
  }
  for (const h of hosts) {
    if (certs !== null && h.agent.streamTls)
      p.add(`hosts (${h.name}).agent.streamTls`, 'not with `certs`: the agent certificate serves');
    // The agent's NATS user is its certificate's subject: the host id must be one subject token.
    if (certs !== null && !IDENTITY_NAME_PATTERN.test(h.name))
      p.add(`hosts (${h.name}).name`, 'with `certs`, letters, digits, _ and - only (no dots)');
  }
  checkControlPlane(p, { certs, nats, controller, hosts });
  // Without `servers`, clients dial the NATS servers the deployer runs, at their hosts' addresses.
  if (nats.deploy && nats.servers.length === 0) {
    const d = nats.deploy;
    const servers = d.hosts.flatMap((n) => {
      const h = hosts.find((x) => x.name === n);
      return h ? [`nats://${h.address}:${d.port}`] : [];
    });
    nats = { ...nats, servers };
    if (controller.servers.length === 0) controller = { ...controller, servers };
  }
  const stateDirs = new Set(hosts.map((h) => h.stateDir));
  if (stateDirs.size > 1) {
    p.add(
      'hosts',
      `every host needs the same stateDir (jobs keep their paths); got ${[...stateDirs].join(', ')}`,
    );
  }
  const context = str(p, 'context', doc.context) ?? basename(path).replace(/\.[^.]*$/, '');
  if (!CONTEXT_NAME_PATTERN.test(context))
    p.add('context', `a context name is letters, digits, _ . - (got ${context})`);
  if (p.list.length > 0) throw invalid(path, p);
  return Object.freeze({ path, nats, controller, hosts: Object.freeze(hosts), certs, context });
}

function invalid(path: string, p: Problems): DroverError {
  return new DroverError(
    ErrorCode.InvalidArgument,
    `inventory ${path} is not valid:\n  ${p.list.join('\n  ')}`,
    { details: { path, problems: p.list } },
  );
}

/**
 * The control plane's hosts are inventory hosts, and the deployer can secure what it runs: the
 * NATS servers and controllers it deploys need the certificates directory.
 */
function checkControlPlane(
  p: Problems,
  inv: Pick<Inventory, 'certs' | 'nats' | 'controller' | 'hosts'>,
): void {
  const names = new Set(inv.hosts.map((h) => h.name));
  const groups = [
    ['nats.hosts', inv.nats.deploy?.hosts ?? []],
    ['controller.hosts', inv.controller.hosts],
  ] as const;
  for (const [where, list] of groups) {
    for (const n of list) if (!names.has(n)) p.add(where, `${n} is not an inventory host`);
    if (list.length > 0 && inv.certs === null)
      p.add(where, 'needs `certs`: the deployer issues the certificates of what it runs');
  }
}

/** Read and validate an inventory file. */
export function loadInventory(path: string, overrides: InventoryOverrides = {}): Inventory {
  const abs = resolve(path);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    throw new DroverError(ErrorCode.InvalidArgument, `cannot read inventory ${abs}`, {
      cause: err,
    });
  }
  let doc: unknown;
  try {
    doc = load(text, { filename: abs, schema: CORE_SCHEMA });
  } catch (err) {
    const where =
      err instanceof YAMLException && err.mark
        ? ` line ${err.mark.line + 1}, column ${err.mark.column + 1}`
        : '';
    const reason = err instanceof YAMLException ? err.reason : String(err);
    throw new DroverError(ErrorCode.InvalidArgument, `inventory ${abs}${where}: ${reason}`, {
      cause: err,
    });
  }
  return compileInventory(doc, abs, overrides);
}

/** The hosts named in `names` (all when empty) that carry every `labels` pair, in inventory order. */
export function selectHosts(
  inv: Inventory,
  names: readonly string[],
  labels: readonly string[] = [],
): HostEntry[] {
  const unknown = names.filter((n) => !inv.hosts.some((h) => h.name === n));
  if (unknown.length > 0) {
    throw new DroverError(
      ErrorCode.NotFound,
      `no host ${unknown.join(', ')} in ${inv.path} (hosts: ${inv.hosts.map((h) => h.name).join(', ')})`,
    );
  }
  const pairs = labels.map((l) => {
    const i = l.indexOf('=');
    if (i <= 0)
      throw new DroverError(ErrorCode.InvalidArgument, `--label wants KEY=VALUE, got ${l}`);
    return [l.slice(0, i), l.slice(i + 1)] as const;
  });
  return inv.hosts.filter(
    (h) =>
      (names.length === 0 || names.includes(h.name)) && pairs.every(([k, v]) => h.labels[k] === v),
  );
}
