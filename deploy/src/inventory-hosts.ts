/**
 * The hosts of the inventory: each entry's own keys (name, address, pinned host key), the settings
 * it may take from `defaults` (SSH, install paths, setup and service modes, labels) and its agent
 * settings, compiled into a `HostEntry`.
 */
import type { LogLevel } from '@drover/common';
import { ID_PATTERN, IFNAME_PATTERN } from '@drover/protocol';
import { parseHostKey, type PinnedHostKey } from './host-key.js';
import {
  checkKeys,
  int,
  isObject,
  localPath,
  oneOf,
  Problems,
  str,
  tlsFiles,
  type Raw,
} from './inventory-fields.js';
import {
  DEFAULTS,
  LOG_LEVELS,
  ServiceMode,
  SetupMode,
  type HostEntry,
  type TlsFiles,
} from './inventory-model.js';

export const HOST_SETTINGS = [
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
const SAFE_REMOTE_PATH = /^(\/[A-Za-z0-9._+-]+){2,}$/;

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

export function compileHost(
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
