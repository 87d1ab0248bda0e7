/** A new certificates directory for a whole cluster: what `drover certs init` and `drover up` make. */
import type { Identity, Role } from '@drover/protocol';
import { initCa, issueIdentity, issueServer } from './issue.js';
import { checkIdentities } from './nats-config.js';
import {
  checkNatsCluster,
  initNatsCluster,
  writeNatsSecurityConfig,
  type NatsClusterSpec,
} from './nats-files.js';
import { writeCrl } from './revocation.js';

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
 * A CA, the NATS server's certificate, one certificate per identity, the NATS security config and
 * an empty CRL, in a new directory: what `drover certs init` and `drover up` make.
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
  // An empty CRL from the start: agents and CRIU check peers against it before anything is revoked.
  await writeCrl(dir);
  return ids;
}
