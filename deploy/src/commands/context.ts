/** What every verb shares: the inventory, the chosen hosts, progress, the controller link. */
import type { ServiceSpec } from '../host/service.js';
import { ClusterLink } from '../cluster.js';
import { DeployError, DeployFailure } from '../errors.js';
import type { Progress } from '../fleet.js';
import type { HostEntry, Inventory } from '../inventory.js';
import { judgeFacts, type HostFacts, type HostOps } from '../remote.js';

/** A verb's inputs. */
export interface DeployContext {
  readonly inv: Inventory;
  readonly hosts: readonly HostEntry[];
  /** Hosts worked on at once (check, install, start, stop, status, uninstall). */
  readonly parallel: number;
  readonly progress: Progress;
  readonly cluster: ClusterLink;
  /** Wait for heartbeats to reach the controller after starting agents. */
  readonly wait: boolean;
  /** Hosts setup-host.sh already ran on in this run (it is idempotent; once is enough). */
  readonly setupDone: Set<string>;
}

/** Build a context (the controller link connects on first use). */
export function deployContext(
  inv: Inventory,
  hosts: readonly HostEntry[],
  options: { parallel: number; progress: Progress; wait: boolean },
): DeployContext {
  return { inv, hosts, ...options, cluster: new ClusterLink(inv), setupDone: new Set() };
}

/** A host's facts, refused with every problem when it cannot run an agent. */
export async function requireFacts(ops: HostOps): Promise<HostFacts & { node: string }> {
  const facts = await ops.facts();
  const verdict = judgeFacts(facts, ops.host);
  if (verdict.problems.length > 0 || facts.node === null) {
    throw new DeployError(
      { host: ops.host.name, failure: DeployFailure.requirement, step: 'check' },
      verdict.problems.join('; '),
      { details: { facts, problems: verdict.problems } },
    );
  }
  return facts as HostFacts & { node: string };
}

/** How the agent runs on this host: the inventory's choice, or systemd where it runs. */
export function serviceModeFor(host: HostEntry, facts: HostFacts): ServiceSpec['mode'] {
  if (host.service === 'auto') return facts.systemd ? 'systemd' : 'supervisor';
  if (host.service === 'systemd' && !facts.systemd) {
    throw new DeployError(
      { host: host.name, failure: DeployFailure.requirement, step: 'check' },
      'the inventory asks for a systemd service, but systemd is not running on the host',
    );
  }
  return host.service;
}

/** "h1: 3 jobs" style text of a short id list. */
export function listIds(ids: readonly string[], max = 4): string {
  return ids.length <= max
    ? ids.join(', ')
    : `${ids.slice(0, max).join(', ')}, +${ids.length - max}`;
}
