/**
 * The files a host gets besides the release: the agent's JSON config (0600: it may hold NATS
 * credentials), TLS material and creds uploaded from the operator's machine (0600): with a
 * certificates directory, the CA and the host's own agent certificate and key, used for NATS and
 * for agent-to-agent streams alike, and the CA's revocation list (`crl.pem`); the service
 * description the helper reads, and the systemd unit on systemd hosts. Pure: no I/O but reading
 * the local TLS/creds files named by the inventory.
 */
import { existsSync, readFileSync } from 'node:fs';
import { crlPath } from '@drover/certs';
import { DroverError, ErrorCode } from '@drover/common';
import { agentCertFiles } from './agent-certs.js';
import { BundlePaths } from './bundle.js';
import type { ServiceSpec } from './host/service.js';
import type { HostEntry, Inventory, TlsFiles } from './inventory.js';
import { REMOTE_PATH, UNIT_NAME, UNIT_PATH, type DesiredFile } from './remote.js';

/** Paths of a host's config files under its install root. */
export function etcPaths(root: string) {
  return {
    agentConfig: `${root}/etc/agent.json`,
    serviceSpec: `${root}/etc/service.json`,
    natsCreds: `${root}/etc/nats.creds`,
    tls: (name: string) => `${root}/etc/tls/${name}.pem`,
  };
}

/** A file of the operator's machine the inventory names; a clear error when unreadable. */
export function readLocal(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new DroverError(ErrorCode.InvalidArgument, `cannot read ${what} ${path}`, {
      cause: err,
    });
  }
}

/** TLS files uploaded under etc/tls as `<prefix>-ca|cert|key.pem`; their remote paths. */
function tlsUploads(
  files: TlsFiles,
  prefix: string,
  root: string,
  out: DesiredFile[],
): { caFile?: string; certFile?: string; keyFile?: string } {
  const p = etcPaths(root);
  const remote: { caFile?: string; certFile?: string; keyFile?: string } = {};
  for (const [k, suffix] of [
    ['caFile', 'ca'],
    ['certFile', 'cert'],
    ['keyFile', 'key'],
  ] as const) {
    const local = files[k];
    if (local === undefined) continue;
    const target = p.tls(`${prefix}-${suffix}`);
    out.push({ target, mode: 0o600, content: readLocal(local, `TLS ${k}`) });
    remote[k] = target;
  }
  return remote;
}

/**
 * The CA's revocation list for `host` (`crl.pem` of the certificates directory), or null when
 * there is none. The agent re-reads it when it changes: pushing it needs no restart.
 */
export function crlUpload(inv: Inventory, host: HostEntry): DesiredFile | null {
  if (inv.certs === null) return null;
  const local = crlPath(inv.certs);
  if (!existsSync(local)) return null;
  return {
    target: etcPaths(host.installRoot).tls('crl'),
    mode: 0o600,
    content: readLocal(local, 'CRL'),
  };
}

/** The agent's JSON config (its `--config` file format) and the files it refers to. */
export function agentFiles(inv: Inventory, host: HostEntry): DesiredFile[] {
  const root = host.installRoot;
  const p = etcPaths(root);
  const files: DesiredFile[] = [];
  const a = host.agent;
  const nats: Record<string, unknown> = { servers: [...inv.nats.servers] };
  // With a certificates directory, the host's own identity: NATS maps its subject to the agent
  // user of this host, and peers' streams check it against the CA (mutual TLS).
  const own =
    inv.certs === null
      ? null
      : tlsUploads(agentCertFiles(inv.certs, host.name), 'agent', root, files);
  if (own) nats.tls = own;
  else if (inv.nats.tls) nats.tls = tlsUploads(inv.nats.tls, 'nats', root, files);
  if (inv.nats.user !== undefined) nats.user = inv.nats.user;
  if (inv.nats.password !== undefined) nats.pass = inv.nats.password;
  if (inv.nats.token !== undefined) nats.token = inv.nats.token;
  if (inv.nats.credsFile !== undefined) {
    files.push({
      target: p.natsCreds,
      mode: 0o600,
      content: readLocal(inv.nats.credsFile, 'NATS creds file'),
    });
    nats.credsFile = p.natsCreds;
  }
  const config: Record<string, unknown> = {
    hostId: host.name,
    stateDir: host.stateDir,
    nats,
    heartbeatIntervalMs: a.heartbeatMs,
    streamListen: a.streamListen,
    logLevel: a.logLevel,
  };
  if (a.reserveMemoryMiB !== null) config.reserveMemoryBytes = a.reserveMemoryMiB * 1024 * 1024;
  if (a.maxJobs !== null) config.maxJobs = a.maxJobs;
  if (a.cgroupParent !== null) config.cgroupParent = a.cgroupParent;
  if (a.jobBridge !== null) config.jobBridge = a.jobBridge;
  if (a.metricsAddr !== null) config.metricsAddr = a.metricsAddr;
  const crl = own ? crlUpload(inv, host) : null;
  if (crl) files.push(crl);
  if (own) config.streamTls = crl ? { ...own, crlFile: crl.target } : own;
  else if (a.streamTls !== null) config.streamTls = tlsUploads(a.streamTls, 'stream', root, files);
  files.unshift({
    target: p.agentConfig,
    mode: 0o600,
    content: JSON.stringify(config, null, 2) + '\n',
  });
  return files;
}

/** The service description the host-side helper reads. */
export function serviceSpec(host: HostEntry, mode: ServiceSpec['mode'], node: string): ServiceSpec {
  return {
    format: 1,
    mode,
    unit: UNIT_NAME,
    node,
    config: etcPaths(host.installRoot).agentConfig,
    stateDir: host.stateDir,
    path: REMOTE_PATH,
  };
}

/**
 * The systemd unit. `KillMode=process`: stopping or restarting the agent must not kill the jobs
 * it started (they live in their own cgroups and sessions). The release is resolved at each
 * start, so the running release is visible in the agent's command line.
 */
export function systemdUnit(host: HostEntry, node: string): string {
  const root = host.installRoot;
  const main = `"$(readlink -f ${root}/current)"/${BundlePaths.agentMain}`;
  return unitText(`Drover agent (${host.name})`, [
    `ExecStart=/bin/sh -c 'exec ${node} ${main} --config ${etcPaths(root).agentConfig}'`,
    'Restart=always',
    'RestartSec=2',
    'KillMode=process',
  ]);
}

/** A drover-deploy systemd unit: `service` lines between the shared ones. */
export function unitText(description: string, service: readonly string[]): string {
  return [
    '# Written by drover-deploy; changes are overwritten by the next install or upgrade.',
    '[Unit]',
    `Description=${description}`,
    'After=network-online.target',
    'Wants=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    `Environment=PATH=${REMOTE_PATH}`,
    ...service,
    'TimeoutStopSec=30',
    'LimitNOFILE=1048576',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** Every file a host should have for `mode` (the unit only on systemd hosts). */
export function hostFiles(
  inv: Inventory,
  host: HostEntry,
  mode: ServiceSpec['mode'],
  node: string,
): DesiredFile[] {
  const files = agentFiles(inv, host);
  files.push({
    target: etcPaths(host.installRoot).serviceSpec,
    mode: 0o644,
    content: JSON.stringify(serviceSpec(host, mode, node), null, 2) + '\n',
  });
  if (mode === 'systemd') {
    files.push({ target: UNIT_PATH, mode: 0o644, content: systemdUnit(host, node) });
  }
  return files;
}
