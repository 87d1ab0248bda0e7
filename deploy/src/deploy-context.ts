/**
 * After `install`, the CLI finds the cluster: the deployer writes the inventory's context into
 * the contexts file (`@drover/common` cluster-contexts; `$DROVER_CONFIG`, else
 * `~/.config/drover/contexts.json`) with the NATS URLs, the cluster CA and the deployer's
 * operator certificate. It becomes current only when no context is.
 */
import { join } from 'node:path';
import { identityPaths } from '@drover/certs';
import { contextsFileOf, saveContext } from '@drover/cli-kit';
import type { ClusterContext } from '@drover/common';
import type { Inventory } from './inventory.js';

/** The context an inventory's cluster gets. */
export function contextOf(inv: Inventory): ClusterContext {
  const op =
    inv.certs === null
      ? null
      : identityPaths(inv.certs, { role: 'operator', name: inv.controller.operator });
  return {
    name: inv.context,
    nats: [...inv.controller.servers],
    ...(op && inv.certs !== null
      ? { caFile: join(inv.certs, 'ca.crt'), certFile: op.certFile, keyFile: op.keyFile }
      : {}),
    source: `drover-deploy install -i ${inv.path}`,
  };
}

/** Write the inventory's context; where, and whether it is current. */
export function writeDeployContext(
  inv: Inventory,
  env: NodeJS.ProcessEnv = process.env,
): { name: string; file: string; current: boolean } {
  return saveContext(contextOf(inv), contextsFileOf(env));
}
