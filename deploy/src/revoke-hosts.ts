/**
 * Hosts that leave for good (`uninstall --purge`) lose their identity: each one's agent
 * certificate is revoked in the certificates directory (`@drover/certs` revocation.ts: the CRL
 * re-signed, the NATS configs regenerated without its user), NATS is reloaded through the
 * inventory's `nats.reload`, and the new CRL is pushed to every other installed host of the
 * inventory, whose agents re-read it (no restart).
 */
import { isDroverError } from '@drover/common';
import { ErrorCode } from '@drover/common';
import { revokeIdentity } from '@drover/certs';
import { runReload } from './agent-certs.js';
import { forEachHost, withHost, type HostResult, type Progress } from './fleet.js';
import { crlUpload } from './host-files.js';
import type { Inventory } from './inventory.js';

/** What {@link revokeHosts} did. */
export interface HostsRevocation {
  /** Hosts whose agent certificate was revoked now (`host (serial)`). */
  readonly revoked: readonly string[];
  /** The inventory's `nats.reload` ran with the regenerated config. */
  readonly reloaded: boolean;
  /** The other hosts, each with whether it got the new CRL. */
  readonly crlPushed: readonly HostResult[];
}

/** Revoke the agent certificates of `names` and tell NATS and the other hosts. */
export async function revokeHosts(
  inv: Inventory,
  names: readonly string[],
  progress: Progress,
  parallel: number,
): Promise<HostsRevocation> {
  const dir = inv.certs;
  if (dir === null || names.length === 0) return { revoked: [], reloaded: false, crlPushed: [] };
  const revoked: string[] = [];
  let conf: string | null = null;
  for (const name of names) {
    try {
      const r = await revokeIdentity(dir, { role: 'agent', name });
      conf = r.natsConfigs[0] ?? conf;
      revoked.push(`${name} (${r.serial})`);
      progress('local', `revoked the agent certificate of ${name} (serial ${r.serial})`);
    } catch (err) {
      // Revoked before (an uninstall run again): nothing left to do for it.
      if (!isDroverError(err, ErrorCode.NotFound)) throw err;
    }
  }
  if (revoked.length === 0) return { revoked, reloaded: false, crlPushed: [] };
  let reloaded = false;
  if (inv.nats.reload !== undefined && conf !== null) {
    progress('local', 'NATS security config regenerated without them: running nats.reload');
    await runReload(inv.nats.reload, conf);
    reloaded = true;
  } else if (inv.nats.deploy !== null) {
    // The NATS servers of `nats.hosts` get the new config and a reload from the caller
    // (control-plane.ts refreshNatsServers), or go with the whole fleet.
    progress('local', 'NATS security config regenerated without them: the NATS servers follow');
  } else {
    progress(
      'local',
      'NATS security config regenerated without them: reload nats-server ' +
        '(`nats-server --signal reload`) so their certificates are refused',
    );
  }
  const others = inv.hosts.filter((h) => !names.includes(h.name));
  const crlPushed = await forEachHost(others, parallel, (host) =>
    withHost(host, progress, async (ops) => {
      const node = await ops.nodePath();
      const st = node ? await ops.service(node, 'status') : null;
      const file = crlUpload(inv, host);
      if (!st?.installed || file === null)
        return { changed: false, detail: 'no agent installed; no CRL pushed', data: {} };
      const changed = await ops.putFiles([file]);
      await ops.previousFiles('discard', changed);
      return {
        changed: changed.length > 0,
        detail: changed.length > 0 ? 'new CRL pushed (the agent re-reads it)' : 'CRL up to date',
        data: { crl: file.target },
      };
    }),
  );
  return { revoked, reloaded, crlPushed };
}
