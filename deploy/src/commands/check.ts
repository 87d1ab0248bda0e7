/** `check`: can each host run an agent? Reachability, host key, root, kernel, node, CRIU, cgroups. */
import { DeployError, DeployFailure } from '../errors.js';
import { forEachHost, withHost, type HostResult } from '../fleet.js';
import { judgeFacts } from '../remote.js';
import type { DeployContext } from './context.js';

/**
 * The NATS server's version against what Drover expects (>= 2.12), as the deployer reaches it;
 * reported on the progress line `nats` and in the JSON result. An unreachable NATS is reported,
 * not an error: `check` is about the hosts.
 */
export async function checkNats(
  ctx: DeployContext,
): Promise<{ version: string | null; problem: string | null }> {
  try {
    const r = await ctx.cluster.natsServer();
    ctx.progress('nats', r.problem ?? `nats-server ${r.version}`);
    return r;
  } catch (err) {
    const problem = `cannot reach NATS: ${err instanceof Error ? err.message : String(err)}`;
    ctx.progress('nats', problem);
    return { version: null, problem };
  }
}

/** Check every host of the context; nothing is changed on any host. */
export function check(ctx: DeployContext): Promise<HostResult[]> {
  return forEachHost(ctx.hosts, ctx.parallel, (host) =>
    withHost(host, ctx.progress, async (ops) => {
      ctx.progress(host.name, 'connected (host key matches); reading facts');
      const facts = await ops.facts();
      const verdict = judgeFacts(facts, host);
      const mode =
        host.service === 'auto' ? (facts.systemd ? 'systemd' : 'supervisor') : host.service;
      if (host.service === 'systemd' && !facts.systemd) {
        verdict.problems.push('the inventory asks for systemd, but systemd is not running');
      }
      const data = { facts, mode, problems: verdict.problems, warnings: verdict.warnings };
      if (verdict.problems.length > 0) {
        throw new DeployError(
          { host: host.name, failure: DeployFailure.requirement, step: 'check' },
          verdict.problems.join('; '),
          { details: data },
        );
      }
      const criu = verdict.criuReady ? `CRIU ${facts.criuVersion}` : 'CRIU by setup';
      const summary = [
        `kernel ${facts.kernel}`,
        'C/R yes',
        `node ${facts.nodeVersion}`,
        criu,
        `cgroup freezer ${facts.freezer}`,
        mode,
      ].join(', ');
      const warn = verdict.warnings.length > 0 ? `; warning: ${verdict.warnings.join('; ')}` : '';
      return { changed: false, detail: summary + warn, data };
    }),
  );
}
