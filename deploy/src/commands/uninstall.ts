/**
 * `uninstall`: stop the agent, remove its unit and install root (and with `purge` its state
 * directory), then check that no process on the host still uses the install root. A host still
 * running jobs is refused: drain it first (`drain` here asks the controller to).
 */
import { DeployError, DeployFailure } from '../errors.js';
import { forEachHost, withHost, type HostResult } from '../fleet.js';
import type { DeployContext } from './context.js';
import { listIds } from './context.js';

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

/** Uninstall from every host of the context. */
export function uninstall(ctx: DeployContext, opts: UninstallOptions): Promise<HostResult[]> {
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
      const changed = stopped || removed.length > 0;
      return {
        changed,
        detail: changed
          ? `${stopped ? 'agent stopped, ' : ''}removed ${removed.join(', ') || 'nothing'}` +
            (moved.length > 0 ? `; drained ${moved.length} jobs first` : '')
          : 'nothing installed; unchanged',
        data: { stopped, removed, moved },
      };
    }),
  );
}
