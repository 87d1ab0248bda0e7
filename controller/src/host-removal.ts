/**
 * `drover hosts rm H`: forget a host that left the cluster. Refused while its agent still
 * answers (it would join again with its next heartbeat) and while the host has live jobs (its
 * last heartbeat's), unless a drain of it finished since or the caller forces it. Once
 * removed, no list names it, no controller waits for it, and its cordon is gone.
 */
import type { StateStore } from '@drover/bus';
import { DroverError, ErrorCode, type Logger } from '@drover/common';
import type { ControllerReplies, ControllerRequest, OperationRecord } from '@drover/protocol';
import type { HostRegistry } from './host-registry.js';
import { isLive } from './job-records.js';
import type { KnownHosts } from './known-hosts.js';

/** What removing a host needs from the controller. */
export interface HostRemovalContext {
  registry: Pick<HostRegistry, 'get' | 'remove'>;
  known: Pick<KnownHosts, 'has' | 'forget'> | null;
  cordons: Pick<StateStore<{ cordoned: boolean }>, 'delete'>;
  ops: Pick<StateStore<OperationRecord>, 'list'>;
  /**
   * Whether the host's agent answers now. Its liveness probe (answered by the agent's heartbeat
   * thread, which a busy main thread cannot hold up: liveness.ts) counts: a loaded agent that is
   * slow to answer a request is not a gone one, and removing it would be wrong.
   */
  answers(host: string): Promise<boolean>;
  log: Logger;
}

/** Whether the newest drain of `host` finished with every job moved. */
async function drained(ops: HostRemovalContext['ops'], host: string): Promise<boolean> {
  const drains = [...(await ops.list()).values()]
    .map((v) => v.value)
    .filter((o) => o.kind === 'drain' && o.host === host)
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  return drains.at(-1)?.state === 'done';
}

/** Remove `req.host` from the cluster's registry and memory. */
export async function removeHost(
  ctx: HostRemovalContext,
  req: ControllerRequest<'hosts-remove'>,
): Promise<ControllerReplies['hosts-remove']> {
  const { host } = req;
  const view = ctx.registry.get(host);
  if (view === undefined && !(ctx.known?.has(host) ?? false)) {
    throw new DroverError(ErrorCode.NotFound, `no host ${host} (see drover hosts)`, {
      details: { host },
    });
  }
  if (await ctx.answers(host)) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `host ${host} still runs its agent: stop it first (drover-deploy uninstall), ` +
        'or it joins again with its next heartbeat',
      { details: { host } },
    );
  }
  const jobs = (view?.info.jobs ?? []).filter(isLive).map((j) => j.id);
  if (jobs.length > 0 && req.force !== true && !(await drained(ctx.ops, host))) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `host ${host} still has ${jobs.length} live jobs (${jobs.slice(0, 4).join(', ')}` +
        `${jobs.length > 4 ? ', ...' : ''}): drain it first (drover drain ${host}), ` +
        'or --force if the host is gone for good with them',
      { details: { host, jobs } },
    );
  }
  ctx.registry.remove(host);
  await ctx.known?.forget(host);
  await ctx.cordons.delete(host);
  ctx.log.info('host removed', { host, ...(jobs.length ? { jobs } : {}) });
  return {
    host,
    lastSeen: view ? new Date(view.lastSeenMs).toISOString() : null,
    jobs,
  };
}
