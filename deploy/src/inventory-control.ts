/**
 * The control plane's part of the inventory: `nats` (how agents reach NATS, and `nats.hosts`: the
 * NATS servers the deployer runs) and `controller` (`controller.hosts`, its job network), and the
 * check that those hosts are inventory hosts and have the certificates they need.
 */
import type { LogLevel } from '@drover/common';
import { IDENTITY_NAME_PATTERN } from '@drover/protocol';
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
  tlsFiles,
  type Raw,
} from './inventory-fields.js';
import {
  DEFAULTS,
  LOG_LEVELS,
  type ControllerInventory,
  type Inventory,
  type NatsDeployment,
  type NatsInventory,
} from './inventory-model.js';

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
const CONTROLLER_KEYS = [
  'nats',
  'heartbeatTimeoutSec',
  'operator',
  'hosts',
  'jobNetwork',
  'logLevel',
];
const JOB_NETWORK_KEYS = ['subnet', 'gateway', 'range'];

export function compileNats(p: Problems, v: unknown, base: string): NatsInventory {
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

/**
 * The control plane's hosts are inventory hosts, and the deployer can secure what it runs: the
 * NATS servers and controllers it deploys need the certificates directory.
 */
export function checkControlPlane(
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

/** `controller`: how this machine reaches the controller, and the controllers the deployer runs. */
export function compileController(
  p: Problems,
  v: unknown,
  nats: NatsInventory,
): ControllerInventory {
  const ctl = v ?? {};
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
  return controller;
}
