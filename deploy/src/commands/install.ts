/**
 * `install`: bring each host to the inventory's state — release unpacked, setup run, config and
 * service in place, agent running, heartbeat at the controller. Idempotent: a second run finds
 * everything in place and changes nothing. A host running another release is refused (that is
 * `upgrade`'s job, with a drain first) unless `force`.
 */
import type { Bundle } from '../bundle.js';
import { DeployError, DeployFailure } from '../errors.js';
import { forEachHost, withHost, type HostOutcome, type HostResult } from '../fleet.js';
import type { ServiceStatus } from '../host/service.js';
import { crlUpload, hostFiles } from '../host-files.js';
import { UNIT_PATH, type HostOps } from '../remote.js';
import { requireFacts, serviceModeFor, type DeployContext } from './context.js';

/** What `start` answers: the status, whether it started the agent, and when (host clock). */
export type StartAnswer = ServiceStatus & { changed: boolean; startedAtMs: number | null };

/**
 * Start the agent (or restart it when `restart`), then wait for its heartbeat at the controller:
 * from the agent started now when one was started, else from the running one. A start that does
 * not come up reports the agent log's tail.
 */
export async function startAndWait(
  ctx: DeployContext,
  ops: HostOps,
  node: string,
  restart: boolean,
): Promise<StartAnswer> {
  const name = ops.host.name;
  if (restart) {
    ctx.progress(name, 'stopping the agent (its jobs keep running)');
    await ops.service(node, 'stop');
  }
  let started: StartAnswer;
  try {
    started = await ops.service<StartAnswer>(node, 'start');
  } catch (err) {
    const log = await ops.agentLogTail().catch(() => '');
    if (err instanceof DeployError && log) err.details.agentLog = log;
    throw err;
  }
  if (started.changed) ctx.progress(name, `agent started (pid ${started.agentPid})`);
  if (ctx.wait) {
    ctx.progress(name, 'waiting for its heartbeat at the controller');
    try {
      await ctx.cluster.waitHeartbeat(name, started.changed ? started.startedAtMs : null);
    } catch (err) {
      const log = await ops.agentLogTail(5).catch(() => '');
      if (err instanceof DeployError && log) {
        err.details.agentLog = log;
        err.message += `; agent log: ${log.split('\n').slice(-2).join(' | ')}`;
      }
      throw err;
    }
  }
  return started;
}

/** Install on one connected host. */
export async function installHost(
  ctx: DeployContext,
  ops: HostOps,
  bundle: Bundle,
  force: boolean,
): Promise<HostOutcome> {
  const host = ops.host;
  const target = bundle.manifest.id;
  const facts = await requireFacts(ops);
  const mode = serviceModeFor(host, facts);
  const before = await ops.service(facts.node, 'status');
  if (before.running && before.release && before.release !== target && !force) {
    throw new DeployError(
      { host: host.name, failure: DeployFailure.refused, step: 'install' },
      `the agent runs release ${before.release}, not ${target}: use \`upgrade\` ` +
        '(drains the host first), or `install --force` to restart it in place',
    );
  }
  // Whether the host changed so far: a step failing after that still reports `changed`.
  let touched = false;
  const noteChange = (err: unknown): never => {
    if (touched && err instanceof DeployError) err.details.changed = true;
    throw err;
  };
  await ops.layout();
  const unpacked = await ops.ensureRelease(bundle).catch(noteChange);
  touched ||= unpacked;
  if (host.setup !== 'none' && !ctx.setupDone.has(host.name)) {
    ctx.setupDone.add(host.name);
    await ops.setup(target, host.setup === 'skip-packages').catch(noteChange);
  }
  const changedFiles = await ops
    .putFiles(hostFiles(ctx.inv, host, mode, facts.node))
    .catch(noteChange);
  touched ||= changedFiles.length > 0;
  if (mode === 'systemd' && changedFiles.includes(UNIT_PATH))
    await ops.enableUnit().catch(noteChange);
  const switched = await ops.switchCurrent(target).catch(noteChange);
  touched ||= switched;
  // A new revocation list alone needs no restart: the agent re-reads it (crl-watch.ts).
  const crl = crlUpload(ctx.inv, host)?.target;
  const restart =
    before.running &&
    (switched || changedFiles.some((f) => f !== crl) || (before.release ?? target) !== target);
  // Starting (or restarting) an agent changes the host even when its heartbeat never comes.
  touched ||= restart || !before.running;
  const started = await startAndWait(ctx, ops, facts.node, restart).catch(noteChange);
  await ops.previousFiles('discard', changedFiles);
  // Keep the release switched away from (a rollback target); a host already there is left as is.
  if (switched) await ops.prune([target, ...(before.current ? [before.current] : [])]);
  const changed = unpacked || switched || changedFiles.length > 0 || started.changed;
  const what = [
    unpacked ? 'release unpacked' : null,
    changedFiles.length > 0 ? `${changedFiles.length} files written` : null,
    restart ? 'agent restarted' : started.changed ? 'agent started' : null,
  ].filter(Boolean);
  return {
    changed,
    detail:
      `release ${bundle.manifest.release} (${target}), ${mode}, agent pid ${started.agentPid}` +
      (ctx.wait ? ', heartbeat ok' : '') +
      (what.length > 0 ? `; ${what.join(', ')}` : '; unchanged'),
    data: {
      release: target,
      label: bundle.manifest.release,
      mode,
      agentPid: started.agentPid,
      unpacked,
      switched,
      changedFiles,
      restarted: restart,
    },
  };
}

/** Install the bundle on every host of the context. */
export function install(ctx: DeployContext, bundle: Bundle, force: boolean): Promise<HostResult[]> {
  return forEachHost(ctx.hosts, ctx.parallel, (host) =>
    withHost(host, ctx.progress, (ops) => installHost(ctx, ops, bundle, force)),
  );
}
