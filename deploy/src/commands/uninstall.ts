/**
 * `uninstall`: stop the agent, remove its unit and install root (and with `purge` its state
 * directory and the agent's cgroups), check that no process on the host still uses the install
 * root, and have the controller forget the host (`drover hosts rm`). A host still running jobs
 * is refused: drain it first (`drain` here asks the controller to). With `purge`, the hosts
 * removed also lose their certificates (revoke-hosts.ts): they leave for good.
 */
import { ErrorCode, isDroverError } from '@drover/common';
import { DeployError, DeployFailure } from '../errors.js';
import { forEachHost, withHost, type HostResult } from '../fleet.js';
import type { DeployContext } from './context.js';
import { listIds } from './context.js';
import { revokeHosts, type HostsRevocation } from '../revoke-hosts.js';

/** Options of {@link uninstall}. */
export interface UninstallOptions {
  /** Also remove the state directory (job records, images). */
  purge: boolean;
  /** Drain hosts that still run jobs through the controller first. */
  drain: boolean;
  drainTimeoutMs: number;
  /**
   * Hosts whose files stay (their agent is only stopped): they run the control plane, which
   * `uninstallControlPlane` removes afterwards with them.
   */
  keepFiles?: ReadonlySet<string>;
}

/** Uninstall from every host of the context; with `purge`, revoke the removed hosts. */
export async function uninstall(
  ctx: DeployContext,
  opts: UninstallOptions,
): Promise<{ results: HostResult[]; revocation: HostsRevocation | null }> {
  const results = await uninstallHosts(ctx, opts);
  if (!opts.purge) return { results, revocation: null };
  const gone = results.filter((r) => r.ok).map((r) => r.host);
  return {
    results,
    revocation: await revokeHosts(ctx.inv, gone, ctx.progress, ctx.parallel),
  };
}

function uninstallHosts(ctx: DeployContext, opts: UninstallOptions): Promise<HostResult[]> {
  return forEachHost(ctx.hosts, ctx.parallel, (host) =>
    withHost(host, ctx.progress, async (ops) => {
      const node = await ops.nodePath();
      let stopped = false;
      let moved: string[] = [];
      if (node) {
        let jobs = await ops.liveJobs(node);
        if (jobs.length > 0 && opts.drain) {
          ctx.progress(host.name, `draining ${jobs.length} jobs first`);
          const op = await ctx.cluster.drain(host.name, 2, opts.drainTimeoutMs);
          moved = (op.items ?? []).filter((i) => i.state === 'done').map((i) => i.jobId);
          jobs = await ops.liveJobs(node);
        }
        if (jobs.length > 0) {
          throw new DeployError(
            { host: host.name, failure: DeployFailure.refused, step: 'uninstall' },
            `still runs ${jobs.length} jobs (${listIds(jobs.map((j) => j.id))}): ` +
              `drain it first (\`drover drain ${host.name}\`, or \`uninstall --drain\`)`,
            { details: { jobs } },
          );
        }
        const st = await ops.service<{ changed?: boolean }>(node, 'stop');
        stopped = st.changed === true;
        if (stopped) ctx.progress(host.name, 'agent stopped');
      }
      if (opts.keepFiles?.has(host.name)) {
        return {
          changed: stopped,
          detail:
            `${stopped ? 'agent stopped' : 'agent not running'}; files stay until the control ` +
            'plane on this host goes' +
            (moved.length > 0 ? `; drained ${moved.length} jobs first` : ''),
          data: { stopped, removed: [], moved, kept: true },
        };
      }
      const removed = await ops.remove(opts.purge);
      const left = await ops.processesUsing(host.installRoot);
      if (left.length > 0) {
        throw new DeployError(
          { host: host.name, failure: DeployFailure.command, step: 'verify' },
          `processes still use ${host.installRoot}: ${left.slice(0, 5).join('; ')}`,
          { details: { processes: left } },
        );
      }
      // The controller forgets the host: its agent is gone (refused while that agent answers).
      // A host that had nothing installed (uninstalled before) fails only if the controller
      // says no; an unreachable controller then changes nothing (it may be gone with the fleet).
      const installed = stopped || removed.length > 0;
      const forgotten = await ctx.cluster.removeHost(host.name).catch((err: unknown) => {
        if (!installed && unreachable(err)) return false;
        throw new DeployError(
          { host: host.name, failure: DeployFailure.cluster, step: 'forget' },
          `removed from the host, but the controller still lists it: ` +
            `${err instanceof Error ? err.message : String(err)} (\`drover hosts rm ${host.name}\`)`,
          { cause: err },
        );
      });
      if (forgotten) ctx.progress(host.name, 'removed from the controller');
      const changed = installed || forgotten;
      return {
        changed,
        detail: changed
          ? `${stopped ? 'agent stopped, ' : ''}removed ${removed.join(', ') || 'nothing'}` +
            (moved.length > 0 ? `; drained ${moved.length} jobs first` : '') +
            (forgotten ? '; the controller forgot it' : '')
          : 'nothing installed; unchanged',
        data: { stopped, removed, moved, forgotten },
      };
    }),
  );
}

/** The controller could not be reached (no NATS, or no answer). */
function unreachable(err: unknown): boolean {
  return isDroverError(err, ErrorCode.Unavailable) || isDroverError(err, ErrorCode.Timeout);
}
