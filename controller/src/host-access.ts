/**
 * Which hosts the controller may name and use (known, reachable, not cordoned), how a host looks
 * on the wire, and the shape of a call to a host's agent that the controller's parts share.
 */
import { DroverError, ErrorCode } from '@drover/common';
import type { AgentOp, AgentReplies, AgentRequest, HostStatus } from '@drover/protocol';
import type { HostRegistry } from './host-registry.js';
import type { KnownHosts } from './known-hosts.js';
import type { HostView } from './placement.js';

/** Ask `host`'s agent `op` (the controller's `agent`: watched when long, see liveness.ts). */
export type AgentCall = <Op extends AgentOp>(
  host: string,
  op: Op,
  req: AgentRequest<Op>,
  timeoutMs?: number,
) => Promise<AgentReplies[Op]>;

/**
 * A host this controller has heard from. FAILED_PRECONDITION for a host the cluster has that has
 * not sent a heartbeat since this controller started; NOT_FOUND for one it does not have.
 */
export function knownHost(
  registry: HostRegistry,
  known: KnownHosts | null,
  host: string,
): HostView {
  const h = registry.get(host);
  if (!h && known?.has(host)) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `host ${host} is unreachable (no heartbeat since this controller started)`,
      { details: { host } },
    );
  }
  if (!h) {
    const all = registry
      .list()
      .map((x) => x.host)
      .join(', ');
    throw new DroverError(ErrorCode.NotFound, `no host ${host} (known: ${all || 'none'})`, {
      details: { host },
    });
  }
  return h;
}

/** A host that may receive work: known, reachable, not cordoned. */
export function usableHost(
  registry: HostRegistry,
  known: KnownHosts | null,
  host: string,
): HostView {
  const h = knownHost(registry, known, host);
  if (!h.reachable) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `host ${host} is unreachable (no heartbeat lately)`,
      { details: { host } },
    );
  }
  if (h.cordoned) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `host ${host} is cordoned; uncordon it first`,
      { details: { host } },
    );
  }
  return h;
}

/** A host as the CLI sees it. */
export function toStatus(h: HostView): HostStatus {
  return {
    host: h.host,
    reachable: h.reachable,
    cordoned: h.cordoned,
    lastSeen: new Date(h.lastSeenMs).toISOString(),
    info: h.info,
  };
}

/**
 * Unreachable hosts (of `only`, or all), each as `host (why)`: what lists name as unanswered.
 * Hosts the cluster remembers but this controller never heard from count too.
 */
export function silentHosts(
  registry: HostRegistry,
  known: KnownHosts | null,
  only?: ReadonlySet<string>,
): string[] {
  const now = Date.now();
  const wanted = (host: string): boolean => only === undefined || only.has(host);
  const lost = registry
    .list()
    .filter((h) => !h.reachable && wanted(h.host))
    .map(
      (h) =>
        `${h.host} (unreachable: no heartbeat for ${Math.round((now - h.lastSeenMs) / 1000)}s)`,
    );
  const unheard = (known?.missing() ?? [])
    .filter((h) => registry.get(h) === undefined && wanted(h))
    .map((h) => `${h} (unreachable: no heartbeat since this controller started)`);
  return [...lost, ...unheard].sort();
}
