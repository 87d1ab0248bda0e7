/**
 * A testbed's certificates: a CA, the NATS server's certificate (for the bridge address), one
 * certificate per agent, the controller's, the test runner's (a second controller identity), an
 * operator's and a viewer's, and the generated NATS security config; for a NATS cluster, a route
 * certificate and a generated config (TLS-only routes) per node. Made by `Testbed.create` with
 * `secure: true` (and so by `drover up` unless `--insecure`).
 */
import { join } from 'node:path';
import {
  identityPaths,
  initCluster,
  initNatsCluster,
  natsNodeConfigPath,
  NATS_SECURITY_FILE,
  readNatsCluster,
  type CertFiles,
} from '@drover/certs';
import type { Role } from '@drover/protocol';
import { readFile } from 'node:fs/promises';

/** The certificates of a secure testbed. */
export interface TestbedCerts {
  /** The certificates directory (`<runDir>/certs`). */
  readonly dir: string;
  /** The nats-server `tls` and `authorization` blocks. */
  readonly natsConfig: string;
  /** The files of one identity. */
  identity(role: Role, name: string): CertFiles;
  /** The test runner's (a controller identity: it may call agents and JetStream directly). */
  readonly runner: CertFiles;
  /** The controller's (`controller`). */
  readonly controller: CertFiles;
  /** An operator's (`operator`) and a viewer's (`viewer`): what a CLI user holds. */
  readonly operator: CertFiles;
  readonly viewer: CertFiles;
  /**
   * The generated config of each node of a NATS cluster named `clusterName` (client `tls`,
   * `authorization` and a `cluster` block whose routes require TLS with a route certificate of
   * this CA), by node name. Issues the nodes' route certificates on the first call; later calls
   * must name the same cluster and nodes.
   */
  natsCluster(
    clusterName: string,
    nodes: readonly { name: string; address: string }[],
    routePort: number,
  ): Promise<ReadonlyMap<string, string>>;
}

/** Identity names of a secure testbed besides the agents (one per host). */
export const TESTBED_IDENTITIES = {
  controller: 'controller',
  runner: 'runner',
  operator: 'operator',
  viewer: 'viewer',
} as const;

/** Make the certificates of a testbed with `hosts` in `dir` (new), NATS at `natsAddresses`. */
export async function createTestbedCerts(
  dir: string,
  hosts: readonly (string | { name: string; address: string })[],
  natsAddresses: readonly string[],
): Promise<TestbedCerts> {
  const n = TESTBED_IDENTITIES;
  const named = hosts.map((h) => (typeof h === 'string' ? { name: h, address: null } : h));
  await initCluster(dir, {
    serverAddresses: natsAddresses,
    controllers: [n.controller, n.runner],
    agents: named.map((h) => h.name),
    // An agent's certificate names its host's address: a peer dialling it can check whom it reached.
    agentAddresses: Object.fromEntries(
      named.filter((h) => h.address !== null).map((h) => [h.name, [h.address!]]),
    ),
    operators: [n.operator],
    viewers: [n.viewer],
  });
  const identity = (role: Role, name: string): CertFiles => identityPaths(dir, { role, name });
  return {
    dir,
    natsConfig: await readFile(join(dir, NATS_SECURITY_FILE), 'utf8'),
    identity,
    runner: identity('controller', n.runner),
    controller: identity('controller', n.controller),
    operator: identity('operator', n.operator),
    viewer: identity('viewer', n.viewer),
    natsCluster: async (clusterName, nodes, routePort) => {
      const want = {
        name: clusterName,
        nodes: nodes.map((x) => ({ name: x.name, addresses: [x.address] })),
        routePort,
      };
      const have = await readNatsCluster(dir);
      if (!have) await initNatsCluster(dir, want);
      else if (JSON.stringify(have) !== JSON.stringify(want))
        throw new Error(`the testbed's certificates are for another NATS cluster (${have.name})`);
      const out = new Map<string, string>();
      for (const x of nodes)
        out.set(x.name, await readFile(natsNodeConfigPath(dir, x.name), 'utf8'));
      return out;
    },
  };
}
