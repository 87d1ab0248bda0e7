/**
 * The files of the control plane the deployer runs on inventory hosts: each NATS server's config
 * (its host's address, JetStream under the state directory, TLS with its own certificate, the
 * authorization of every identity of the certificates directory, and for three servers the
 * TLS-only routes), each controller's JSON config and certificate, their service descriptions
 * and systemd units. Pure: no I/O but reading the local certificate files.
 */
import { identityPaths, natsClusterConfig, natsSecurityConfig, serverPaths } from '@drover/certs';
import type { Identity } from '@drover/protocol';
import { etcPaths, readLocal, unitText } from './host-files.js';
import { RELEASE_DIR, type ServiceName, type ServiceSpec } from './host/service.js';
import type { HostEntry, Inventory, NatsDeployment } from './inventory.js';
import { REMOTE_PATH, type DesiredFile } from './remote.js';

/** Where setup-host.sh installs nats-server on every host (never from npm). */
export const NATS_BIN = '/usr/local/sbin/nats-server';
/** The controller's entry point inside a release. */
export const CONTROLLER_MAIN = 'controller/dist/main.js';

/** A control-plane service of a host. */
export type ControlService = Exclude<ServiceName, 'agent'>;

/** systemd unit of each control-plane service, and where it goes. */
export function controlUnit(name: ControlService): { unit: string; path: string } {
  const unit = `drover-${name}.service`;
  return { unit, path: `/etc/systemd/system/${unit}` };
}

/** Paths of the control plane's files under a host's install root. */
export function controlPaths(root: string) {
  return {
    natsConf: `${root}/etc/nats/nats.conf`,
    controllerConfig: `${root}/etc/controller.json`,
    spec: (name: ControlService) => `${root}/etc/${name}-service.json`,
  };
}

/** Where a deployed NATS server keeps JetStream: under the state directory (`--purge` removes it). */
export function natsStoreDir(host: HostEntry): string {
  return `${host.stateDir}/nats`;
}

/** `nats://ADDRESS:PORT` of the NATS server on `host`. */
export function natsUrlOf(host: HostEntry, d: NatsDeployment): string {
  return `nats://${host.address}:${d.port}`;
}

/** Upload `files` under etc/tls as `<prefix>-ca|cert|key.pem`; their remote paths. */
function tlsUpload(
  local: { caFile: string; certFile: string; keyFile: string },
  prefix: string,
  root: string,
  out: DesiredFile[],
): { caFile: string; certFile: string; keyFile: string } {
  const p = etcPaths(root);
  const remote = {
    caFile: p.tls(`${prefix}-ca`),
    certFile: p.tls(`${prefix}-cert`),
    keyFile: p.tls(`${prefix}-key`),
  };
  for (const k of ['caFile', 'certFile', 'keyFile'] as const)
    out.push({ target: remote[k], mode: 0o600, content: readLocal(local[k], `${prefix} ${k}`) });
  return remote;
}

/** The certificate a NATS server on `host` serves clients (and routes) with: `server/<host>`. */
export function natsNodeCertFiles(certs: string, host: HostEntry) {
  return { ...serverPaths(certs, host.name), caFile: `${certs}/ca.crt` };
}

/** The controller identity of a controller host (its name is the host's). */
export function controllerIdentity(host: HostEntry): Identity {
  return { role: 'controller', name: host.name };
}

function spec(
  host: HostEntry,
  name: ControlService,
  mode: ServiceSpec['mode'],
  node: string,
  exec: string[],
  config: string,
): DesiredFile {
  const s: ServiceSpec = {
    format: 1,
    exec,
    mode,
    unit: controlUnit(name).unit,
    node,
    config,
    stateDir: host.stateDir,
    path: REMOTE_PATH,
  };
  return {
    target: controlPaths(host.installRoot).spec(name),
    mode: 0o644,
    content: JSON.stringify(s, null, 2) + '\n',
  };
}

/** The systemd unit of a control-plane service (release resolved at each start). */
function unitFile(host: HostEntry, name: ControlService, exec: string[]): DesiredFile {
  const root = host.installRoot;
  const cmd = exec
    .map((a) => a.split(RELEASE_DIR).join(`"$(readlink -f ${root}/current)"`))
    .join(' ');
  const text = unitText(`Drover ${name === 'nats' ? 'NATS server' : 'controller'} (${host.name})`, [
    `ExecStart=/bin/sh -c 'exec ${cmd}'`,
    ...(name === 'nats' ? ['ExecReload=/bin/kill -HUP $MAINPID'] : []),
    'Restart=always',
    'RestartSec=2',
  ]);
  return { target: controlUnit(name).path, mode: 0o644, content: text };
}

/**
 * The NATS server of `host`: its config, certificate, service description (and unit). The
 * authorization admits exactly `identities` (every identity of the certificates directory).
 */
export function natsFiles(
  inv: Inventory,
  host: HostEntry,
  mode: ServiceSpec['mode'],
  node: string,
  identities: readonly Identity[],
): DesiredFile[] {
  const d = inv.nats.deploy;
  if (!d || inv.certs === null) throw new Error('natsFiles: no deployed NATS');
  const root = host.installRoot;
  const files: DesiredFile[] = [];
  const tls = tlsUpload(natsNodeCertFiles(inv.certs, host), 'nats', root, files);
  const peers = d.hosts
    .filter((n) => n !== host.name)
    .map((n) => inv.hosts.find((h) => h.name === n))
    .filter((h): h is HostEntry => h !== undefined);
  const q = JSON.stringify;
  const conf = [
    '# Written by drover-deploy from the inventory; regenerated by every install and upgrade.',
    `server_name: ${q(host.name)}`,
    `listen: ${q(`${host.address}:${d.port}`)}`,
    'jetstream {',
    `  store_dir: ${q(natsStoreDir(host))}`,
    '}',
    natsSecurityConfig({ tls, identities }),
    ...(peers.length > 0
      ? [
          natsClusterConfig({
            clusterName: d.cluster,
            tls,
            listen: `${host.address}:${d.routePort}`,
            routes: peers.map((p) => `${p.address}:${d.routePort}`),
          }),
        ]
      : []),
  ].join('\n');
  const p = controlPaths(root);
  files.unshift({ target: p.natsConf, mode: 0o600, content: conf });
  const exec = [NATS_BIN, '-c', p.natsConf];
  files.push(spec(host, 'nats', mode, node, exec, p.natsConf));
  if (mode === 'systemd') files.push(unitFile(host, 'nats', exec));
  return files;
}

/** The controller of `host`: its JSON config, certificate, service description (and unit). */
export function controllerFiles(
  inv: Inventory,
  host: HostEntry,
  mode: ServiceSpec['mode'],
  node: string,
): DesiredFile[] {
  if (inv.certs === null) throw new Error('controllerFiles: no certificates directory');
  const root = host.installRoot;
  const files: DesiredFile[] = [];
  const own = identityPaths(inv.certs, controllerIdentity(host));
  const tls = tlsUpload({ ...own, caFile: `${inv.certs}/ca.crt` }, 'controller', root, files);
  const replicas = (inv.nats.deploy?.hosts.length ?? inv.nats.servers.length) >= 3 ? 3 : 1;
  const config = {
    id: host.name,
    nats: { servers: [...inv.controller.servers], tls },
    replicas,
    logLevel: inv.controller.logLevel,
    ...(inv.controller.jobNetwork ? { jobNetwork: inv.controller.jobNetwork } : {}),
  };
  const p = controlPaths(root);
  files.unshift({
    target: p.controllerConfig,
    mode: 0o600,
    content: JSON.stringify(config, null, 2) + '\n',
  });
  const exec = [node, `${RELEASE_DIR}/${CONTROLLER_MAIN}`, '--config', p.controllerConfig];
  files.push(spec(host, 'controller', mode, node, exec, p.controllerConfig));
  if (mode === 'systemd') files.push(unitFile(host, 'controller', exec));
  return files;
}
