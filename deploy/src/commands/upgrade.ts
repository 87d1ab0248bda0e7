/**
 * `upgrade`: a rolling upgrade. First every host gets the new release unpacked (in parallel; the
 * running agents are untouched). Then one host at a time: drain it through the controller (it is
 * cordoned and its jobs migrate to other hosts), stop the agent, switch `current`, write the
 * config, start, wait for the new agent's heartbeat, uncordon, next host. A host that fails is
 * rolled back to its previous release and left cordoned, and the upgrade stops there: hosts not
 * yet reached keep their release and say so.
 */
import type { OperationRecord } from '@drover/protocol';
import type { Bundle } from '../bundle.js';
import { DeployError, DeployFailure } from '../errors.js';
import { failedResult, forEachHost, withHost, type HostResult } from '../fleet.js';
import type { ServiceStatus } from '../host/service.js';
import { hostFiles } from '../host-files.js';
import { UNIT_PATH, type HostOps } from '../remote.js';
import { listIds, requireFacts, serviceModeFor, type DeployContext } from './context.js';
import { startAndWait } from './install.js';

/** Options of {@link upgrade}. */
export interface UpgradeOptions {
  /** Drain each host first (default). Without it, the agent restarts under its running jobs. */
  drain: boolean;
  /** Migrations at once within one host's drain. */
  drainParallel: number;
  drainTimeoutMs: number;
  /**
   * Run after every host is staged and before the first agent's drain: the control plane's own
   * rolling upgrade. A failed row stops the upgrade there (no agent is touched).
   */
  beforeAgents?: () => Promise<HostResult[]>;
}

/** What the staging pass learned about a host. */
interface Staged {
  node: string;
  mode: 'systemd' | 'supervisor';
  before: ServiceStatus;
  /** Config files that differ from what the host has. */
  filesDiffer: string[];
}

/** Why a drain did not empty the host, or null when it did. */
function drainProblem(op: OperationRecord): string | null {
  const stuck = (op.items ?? []).filter((i) => i.state !== 'done');
  if (op.state === 'done' && stuck.length === 0) return null;
  const reasons = stuck.map((i) => `${i.jobId} ${i.state}${i.reason ? ` (${i.reason})` : ''}`);
  return (
    `drain ${op.opId} ended ${op.state}` +
    (reasons.length > 0 ? `: ${reasons.join('; ')}` : '') +
    (op.error ? `: ${op.error.message}` : '')
  );
}

/** Stage: unpack the release and compare config, changing nothing the running agent uses. */
async function stageHost(ctx: DeployContext, ops: HostOps, bundle: Bundle): Promise<Staged> {
  const facts = await requireFacts(ops);
  const mode = serviceModeFor(ops.host, facts);
  const before = await ops.service(facts.node, 'status');
  if (!before.installed) {
    throw new DeployError(
      { host: ops.host.name, failure: DeployFailure.refused, step: 'stage' },
      'no agent is installed here: run `install` first',
    );
  }
  await ops.ensureRelease(bundle);
  const filesDiffer = await ops.putFiles(hostFiles(ctx.inv, ops.host, mode, facts.node), 'diff');
  return { node: facts.node, mode, before, filesDiffer };
}

/** Upgrade one host (drained first); on failure roll back to the release it ran. */
async function upgradeHost(
  ctx: DeployContext,
  ops: HostOps,
  bundle: Bundle,
  staged: Staged,
  opts: UpgradeOptions,
): Promise<HostResult> {
  const host = ops.host;
  const target = bundle.manifest.id;
  const { before, node, mode } = staged;
  if (
    before.running &&
    before.release === target &&
    before.current === target &&
    staged.filesDiffer.length === 0
  ) {
    return {
      host: host.name,
      ok: true,
      changed: false,
      detail: `already runs release ${bundle.manifest.release} (${target}); unchanged`,
      data: { release: target },
      error: null,
    };
  }
  const known = await ctx.cluster.host(host.name);
  if (!known || !known.reachable) {
    throw new DeployError(
      { host: host.name, failure: DeployFailure.cluster, step: 'drain' },
      `the controller ${known ? 'cannot reach' : 'does not know'} this host's agent: ` +
        'repair it with `install` before a rolling upgrade',
    );
  }
  let moved: string[] = [];
  if (opts.drain) {
    ctx.progress(host.name, 'draining (cordon, then migrate every job to other hosts)');
    const op = await ctx.cluster.drain(host.name, opts.drainParallel, opts.drainTimeoutMs);
    const problem = drainProblem(op);
    if (problem) {
      throw new DeployError(
        { host: host.name, failure: DeployFailure.cluster, step: 'drain' },
        `${problem}; the host stays cordoned and keeps its release`,
        { details: { drain: op.opId } },
      );
    }
    moved = (op.items ?? []).map((i) => i.jobId);
    ctx.progress(
      host.name,
      moved.length > 0 ? `drained: moved ${listIds(moved)}` : 'drained: no jobs',
    );
  } else {
    await ctx.cluster.cordon(host.name);
  }
  const rollbackTo = before.current;
  let changed: string[] = [];
  try {
    ctx.progress(host.name, 'stopping the agent');
    await ops.service(node, 'stop');
    await ops.switchCurrent(target);
    changed = await ops.putFiles(hostFiles(ctx.inv, host, mode, node));
    if (mode === 'systemd' && changed.includes(UNIT_PATH)) await ops.enableUnit();
    const started = await startAndWait(ctx, ops, node, false);
    await ops.previousFiles('discard', changed);
    await ctx.cluster.uncordon(host.name);
    await ops.prune([target, ...(rollbackTo && rollbackTo !== target ? [rollbackTo] : [])]);
    return {
      host: host.name,
      ok: true,
      changed: true,
      detail:
        `${before.release ?? rollbackTo ?? '?'} → ${bundle.manifest.release} (${target}), agent pid ${started.agentPid}` +
        `, heartbeat ok, uncordoned; ${opts.drain ? `${moved.length} jobs moved off first` : 'not drained'}`,
      data: {
        from: before.release ?? rollbackTo,
        release: target,
        agentPid: started.agentPid,
        moved,
      },
      error: null,
    };
  } catch (err) {
    const first =
      err instanceof DeployError
        ? err
        : new DeployError(
            { host: host.name, failure: DeployFailure.command, step: 'upgrade' },
            err instanceof Error ? err.message : String(err),
            { cause: err },
          );
    let note = 'left cordoned';
    if (rollbackTo) {
      try {
        ctx.progress(host.name, `rolling back to ${rollbackTo} and its config`);
        await ops.service(node, 'stop');
        await ops.switchCurrent(rollbackTo);
        await ops.previousFiles('restore', changed);
        if (mode === 'systemd' && changed.includes(UNIT_PATH)) await ops.enableUnit();
        await startAndWait(ctx, ops, node, false);
        note = `rolled back to ${rollbackTo}, left cordoned`;
      } catch (rbErr) {
        // The first error stays the one reported; the rollback's is attached.
        first.suppress(rbErr);
        note = `rollback to ${rollbackTo} failed too, left cordoned`;
      }
    }
    first.message = `${first.message}; ${note}`;
    throw first;
  }
}

/** Rolling upgrade of the context's hosts to `bundle`. */
export async function upgrade(
  ctx: DeployContext,
  bundle: Bundle,
  opts: UpgradeOptions,
): Promise<HostResult[]> {
  await ctx.cluster.ensureReachable();
  const stagedMap = new Map<string, Staged>();
  // Pass 1, in parallel: every host gets the release before any is drained.
  const staging = await forEachHost(ctx.hosts, ctx.parallel, (host) =>
    withHost(host, ctx.progress, async (ops) => {
      const s = await stageHost(ctx, ops, bundle);
      stagedMap.set(host.name, s);
      return { changed: false, detail: 'staged', data: {} };
    }),
  );
  const failed = staging.filter((r) => !r.ok).map((r) => r.host);
  if (failed.length > 0) {
    // Nothing is drained until every host has the release: refuse the whole rolling upgrade.
    return staging.map((r) =>
      r.ok ? skipped(r.host, `staging failed on ${failed.join(', ')}`) : r,
    );
  }
  const results: HostResult[] = opts.beforeAgents ? await opts.beforeAgents() : [];
  let stoppedAt: string | null = results.find((r) => !r.ok)?.host ?? null;
  for (const host of ctx.hosts) {
    if (stoppedAt !== null) {
      results.push(skipped(host.name, `the rolling upgrade stopped at ${stoppedAt}`));
      continue;
    }
    const staged = stagedMap.get(host.name) as Staged;
    try {
      results.push(
        await withHost(host, ctx.progress, (ops) => upgradeHost(ctx, ops, bundle, staged, opts)),
      );
    } catch (err) {
      results.push(failedResult(host.name, err));
      stoppedAt = host.name;
    }
  }
  return results;
}

function skipped(host: string, why: string): HostResult {
  return failedResult(
    host,
    new DeployError(
      { host, failure: DeployFailure.refused, step: 'upgrade' },
      `not upgraded: ${why} (this host keeps its release)`,
    ),
  );
}
