/** `start`, `stop`, `status`: the agent service on each host, and the controller's view of it. */
import type { HostStatus } from '@drover/protocol';
import { DeployError, DeployFailure } from '../errors.js';
import { forEachHost, withHost, type HostResult } from '../fleet.js';
import type { ServiceStatus } from '../host/service.js';
import type { HostOps } from '../remote.js';
import type { DeployContext } from './context.js';
import { startAndWait } from './install.js';

async function nodeOf(ops: HostOps): Promise<string> {
  const node = await ops.nodePath();
  if (!node) {
    throw new DeployError(
      { host: ops.host.name, failure: DeployFailure.requirement, step: 'node' },
      'no node on the host (set `node:` in the inventory)',
    );
  }
  return node;
}

function notInstalled(name: string, step: string): DeployError {
  return new DeployError(
    { host: name, failure: DeployFailure.refused, step },
    'no agent is installed here (run `install` first)',
  );
}

/** Start each host's agent (if stopped) and wait for its heartbeat. */
export function start(ctx: DeployContext): Promise<HostResult[]> {
  return forEachHost(ctx.hosts, ctx.parallel, (host) =>
    withHost(host, ctx.progress, async (ops) => {
      const node = await nodeOf(ops);
      const st = await ops.service(node, 'status');
      if (!st.installed) throw notInstalled(host.name, 'start');
      const started = await startAndWait(ctx, ops, node, false);
      return {
        changed: started.changed,
        detail: `${started.changed ? 'started' : 'already running'}, pid ${started.agentPid}, release ${started.label ?? '?'} (${started.release})`,
        data: { ...started },
      };
    }),
  );
}

/** Stop each host's agent; its jobs keep running (unmanaged until it starts again). */
export function stop(ctx: DeployContext): Promise<HostResult[]> {
  return forEachHost(ctx.hosts, ctx.parallel, (host) =>
    withHost(host, ctx.progress, async (ops) => {
      const node = await nodeOf(ops);
      const st = await ops.service<ServiceStatus & { changed: boolean }>(node, 'stop');
      if (!st.installed) throw notInstalled(host.name, 'stop');
      const jobs = st.changed ? await ops.liveJobs(node) : [];
      return {
        changed: st.changed,
        detail:
          (st.changed ? 'stopped' : 'already stopped') +
          (jobs.length > 0 ? `; ${jobs.length} jobs keep running unmanaged until it starts` : ''),
        data: { ...st, liveJobs: jobs.length },
      };
    }),
  );
}

function controllerView(h: HostStatus | null | undefined): string {
  if (h === undefined) return 'controller unreachable';
  if (h === null) return 'unknown to the controller';
  const jobs = h.info.jobs.filter((j) => j.state === 'running').length;
  return `${h.reachable ? 'reachable' : 'UNREACHABLE'}${h.cordoned ? ', cordoned' : ''}, ${jobs} jobs`;
}

/** Each host's agent as the host and the controller see it. */
export async function status(ctx: DeployContext): Promise<HostResult[]> {
  // One look at the controller for all hosts; undefined = could not ask.
  const known: HostStatus[] | undefined = await ctx.cluster.hosts().catch(() => undefined);
  return forEachHost(ctx.hosts, ctx.parallel, (host) =>
    withHost(host, ctx.progress, async (ops) => {
      const node = await ops.nodePath();
      const st: ServiceStatus = node
        ? await ops.service(node, 'status')
        : ({ installed: false, running: false } as ServiceStatus);
      const view =
        known === undefined ? undefined : (known.find((h) => h.host === host.name) ?? null);
      const local = !st.installed
        ? 'not installed'
        : st.running
          ? `running, pid ${st.agentPid}, release ${st.label ?? '?'} (${st.release})` +
            (st.current && st.current !== st.release ? ` (current: ${st.current})` : '') +
            `, ${st.mode}` +
            (st.restarts > 0 ? `, ${st.restarts} restarts` : '')
          : `stopped (release ${st.label ?? '?'} (${st.current ?? '?'}), ${st.mode})`;
      return {
        changed: false,
        detail: st.installed ? `${local}; ${controllerView(view)}` : local,
        data: { ...st, controller: view ?? null },
      };
    }),
  );
}
