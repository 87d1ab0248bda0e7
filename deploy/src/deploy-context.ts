/**
 * After `install`, the CLI finds the cluster: the deployer writes the inventory's context into
 * the contexts file (`@drover/common` cluster-contexts; `$DROVER_CONFIG`, else
 * `~/.config/drover/contexts.json`) with the NATS URLs, the cluster CA and the deployer's
 * operator certificate. It becomes current only when no context is.
 */
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { identityPaths } from '@drover/certs';
import {
  contextsPath,
  formatContexts,
  NO_CONTEXTS,
  parseContexts,
  upsertContext,
  type ClusterContext,
  type ContextsFile,
} from '@drover/common';
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
  const file = contextsPath(env, env.HOME || homedir());
  let before: ContextsFile = NO_CONTEXTS;
  try {
    before = parseContexts(readFileSync(file, 'utf8'), file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const after = upsertContext(before, contextOf(inv), false);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, formatContexts(after), { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
  return { name: inv.context, file, current: after.current === inv.context };
}
