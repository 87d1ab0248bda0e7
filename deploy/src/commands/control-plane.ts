/**
 * The control plane from the inventory: the NATS servers (`nats.hosts`, 1 or 3) and the
 * controllers (`controller.hosts`) the deployer runs on inventory hosts, beside their agents and
 * from the same release. `install` brings them up before any agent (NATS first, all servers at
 * once so a cluster can form, then the controllers); `upgrade` restarts them one at a time on
 * the new release (NATS servers, then controllers) before the agents' drains; `uninstall`
 * removes them last, once no agent needs them. Each service has its own result row,
 * `<host>/nats` and `<host>/controller`.
 */
import { identityPaths, listIdentities } from '@drover/certs';
import { jetStreamAnswers } from '@drover/bus';
import type { Bundle } from '../bundle.js';
import {
  controllerFiles,
  controllerIdentity,
  controlUnit,
  NATS_BIN,
  natsFiles,
  natsUrlOf,
  type ControlService,
} from '../control-files.js';
import { DeployError, DeployFailure } from '../errors.js';
import { failedResult, resultOf, withHost, type HostOutcome, type HostResult } from '../fleet.js';
import type { ServiceStatus } from '../host/service.js';
import type { HostEntry, Inventory } from '../inventory.js';
import type { DesiredFile, HostOps } from '../remote.js';
import { requireFacts, serviceModeFor, type DeployContext } from './context.js';

const READY_TIMEOUT_MS = 90_000;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** One control-plane service on one host. */
interface Member {
  host: HostEntry;
  service: ControlService;
}

/** The row name of a member in result tables. */
export const rowOf = (m: Member): string => `${m.host.name}/${m.service}`;

/** The deployed NATS servers and controllers among `hosts`, NATS first, in inventory order. */
export function members(inv: Inventory, hosts: readonly HostEntry[]): Member[] {
  const pick = (names: readonly string[], service: ControlService): Member[] =>
    names.flatMap((n) => hosts.filter((h) => h.name === n).map((host) => ({ host, service })));
  return [
    ...pick(inv.nats.deploy?.hosts ?? [], 'nats'),
    ...pick(inv.controller.hosts, 'controller'),
  ];
}

/** Whether the context selects the whole fleet (the control plane goes only with all of it). */
export function wholeFleet(ctx: DeployContext): boolean {
  return ctx.inv.hosts.every((h) => ctx.hosts.some((s) => s.name === h.name));
}

/** The files of a member. */
async function filesOf(
  inv: Inventory,
  m: Member,
  mode: 'systemd' | 'supervisor',
  node: string,
): Promise<DesiredFile[]> {
  if (m.service === 'controller') return controllerFiles(inv, m.host, mode, node);
  return natsFiles(inv, m.host, mode, node, await listIdentities(inv.certs as string));
}

function describe(st: ServiceStatus): string {
  if (!st.installed) return 'not installed';
  if (!st.running) return `stopped (${st.mode ?? '?'})`;
  return (
    `running, pid ${st.agentPid}, release ${st.label ?? '?'} (${st.release ?? st.current ?? '?'})` +
    `, ${st.mode}` +
    (st.restarts > 0 ? `, ${st.restarts} restarts` : '')
  );
}

/** A controller certificate to ask JetStream with (the API is the controllers'). */
function probeTls(inv: Inventory): { caFile: string; certFile: string; keyFile: string } | null {
  const h = inv.hosts.find((x) => inv.controller.hosts.includes(x.name));
  if (!h || inv.certs === null) return null;
  return { ...identityPaths(inv.certs, controllerIdentity(h)), caFile: `${inv.certs}/ca.crt` };
}

/** Wait until JetStream answers through the NATS server of `host` alone. */
async function waitNats(ctx: DeployContext, host: HostEntry): Promise<void> {
  const d = ctx.inv.nats.deploy;
  const tls = probeTls(ctx.inv);
  if (!d || !tls) return;
  const url = natsUrlOf(host, d);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  ctx.progress(`${host.name}/nats`, `waiting for JetStream through ${url}`);
  for (;;) {
    try {
      await jetStreamAnswers(url, 2000, tls);
      return;
    } catch (err) {
      if (Date.now() > deadline)
        throw new DeployError(
          { host: `${host.name}/nats`, failure: DeployFailure.cluster, step: 'nats-ready' },
          `JetStream does not answer through ${url} within ${READY_TIMEOUT_MS / 1000} s: ` +
            `${err instanceof Error ? err.message : String(err)}`,
          { cause: err },
        );
    }
    await sleep(500);
  }
}

/** Wait until a controller answers through NATS (after starting or restarting one). */
async function waitController(ctx: DeployContext, row: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  ctx.progress(row, 'waiting for a controller to answer');
  for (;;) {
    try {
      await ctx.cluster.ensureReachable();
      return;
    } catch (err) {
      if (Date.now() > deadline)
        throw new DeployError(
          { host: row, failure: DeployFailure.cluster, step: 'controller-ready' },
          `no controller answers within ${READY_TIMEOUT_MS / 1000} s: ` +
            `${err instanceof Error ? err.message : String(err)}`,
          { cause: err },
        );
    }
    await sleep(500);
  }
}

/** systemd: reload units and enable a control-plane unit (after its file changed). */
async function enableUnit(ops: HostOps, service: ControlService): Promise<void> {
  await ops.ssh.must(
    `systemctl daemon-reload && systemctl enable ${controlUnit(service).unit} >/dev/null\n`,
    { step: 'systemd' },
  );
}

/**
 * Bring one member to the inventory's state on `bundle`'s release: release unpacked, setup run
 * (it installs nats-server), files written, service running. A running NATS server whose config
 * changed reloads it (SIGHUP: new identities may connect); a running controller restarts.
 * With `restart` (upgrade), the service restarts on the new release whatever changed.
 */
async function applyMember(
  ctx: DeployContext,
  ops: HostOps,
  m: Member,
  bundle: Bundle,
  opts: { force: boolean; restart: boolean },
): Promise<HostOutcome> {
  const row = rowOf(m);
  const target = bundle.manifest.id;
  const facts = await requireFacts(ops);
  const mode = serviceModeFor(m.host, facts);
  const before = await ops.service(facts.node, 'status', m.service);
  if (!opts.restart && before.running && before.release && before.release !== target && !opts.force)
    throw new DeployError(
      { host: row, failure: DeployFailure.refused, step: 'install' },
      `the ${m.service} runs release ${before.release}, not ${target}: use \`upgrade\` ` +
        '(one server at a time), or `install --force`',
    );
  let touched = false;
  try {
    await ops.layout();
    const unpacked = await ops.ensureRelease(bundle);
    touched ||= unpacked;
    // Once per host and run: setup installs (or updates) nats-server before it is started.
    if (m.host.setup !== 'none' && !ctx.setupDone.has(m.host.name)) {
      ctx.setupDone.add(m.host.name);
      await ops.setup(target, m.host.setup === 'skip-packages');
    }
    const files = await filesOf(ctx.inv, m, mode, facts.node);
    const changed = await ops.putFiles(files);
    touched ||= changed.length > 0;
    if (mode === 'systemd' && changed.includes(controlUnit(m.service).path))
      await enableUnit(ops, m.service);
    const switched = await ops.switchCurrent(target);
    touched ||= switched;
    let action: string | null = null;
    if (before.running && (opts.restart || (m.service === 'controller' && changed.length > 0))) {
      ctx.progress(row, `restarting the ${m.service}`);
      await ops.service(facts.node, 'stop', m.service);
      action = 'restarted';
    } else if (before.running && changed.length > 0 && before.agentPid) {
      await reloadNats(ctx, ops, row, before.agentPid);
      action = 'reloaded';
    }
    touched ||= action !== null;
    const started = await ops.service<ServiceStatus & { changed: boolean }>(
      facts.node,
      'start',
      m.service,
    );
    if (started.changed) {
      touched = true;
      action ??= 'started';
      ctx.progress(row, `${m.service} ${action} (pid ${started.agentPid})`);
    }
    await ops.previousFiles('discard', changed);
    return {
      changed: touched,
      detail:
        `${describe(started)}` +
        (action || changed.length > 0 || unpacked
          ? `; ${[unpacked ? 'release unpacked' : null, changed.length > 0 ? `${changed.length} files written` : null, action].filter(Boolean).join(', ')}`
          : '; unchanged'),
      data: {
        service: m.service,
        pid: started.agentPid,
        release: target,
        mode,
        changedFiles: changed,
        action,
      },
    };
  } catch (err) {
    // The host changed although the step failed: say so (the report's CHANGED column).
    if (touched && err instanceof DeployError) err.details.changed = true;
    const log = await ops.ssh
      .run('tail -n 5 "$1" 2>/dev/null\n', {
        step: 'log',
        args: [`${m.host.installRoot}/log/${m.service}.log`],
      })
      .then((r) => r.stdout.trim())
      .catch(() => '');
    if (err instanceof DeployError && log) err.details.serviceLog = log;
    throw err;
  }
}

/** A running nats-server re-reads its config (SIGHUP): new users may connect, gone ones are cut. */
async function reloadNats(
  ctx: DeployContext,
  ops: HostOps,
  row: string,
  pid: number,
): Promise<void> {
  ctx.progress(row, 'config changed: nats-server reloads it (SIGHUP)');
  await ops.ssh.must('kill -HUP "$1"\n', { step: 'nats-reload', args: [String(pid)] });
}

/**
 * After hosts were revoked (`uninstall --purge` of some of them): every running NATS server of
 * the inventory gets the regenerated config without their users and reloads it, so their old
 * certificates are refused and the connections they had are cut.
 */
export async function refreshNatsServers(ctx: DeployContext): Promise<HostResult[]> {
  const group = members(ctx.inv, ctx.inv.hosts).filter((m) => m.service === 'nats');
  return Promise.all(
    group.map((m) =>
      runMember(ctx, m, async (ops) => {
        const facts = await requireFacts(ops);
        const st = await ops.service(facts.node, 'status', m.service);
        if (!st.running || !st.agentPid)
          return { changed: false, detail: `${describe(st)}: config not pushed`, data: {} };
        const files = await filesOf(ctx.inv, m, serviceModeFor(m.host, facts), facts.node);
        const changed = await ops.putFiles(files);
        if (changed.length > 0) await reloadNats(ctx, ops, rowOf(m), st.agentPid);
        await ops.previousFiles('discard', changed);
        return {
          changed: changed.length > 0,
          detail: changed.length > 0 ? 'revoked users removed; reloaded' : 'config up to date',
          data: { service: m.service, changedFiles: changed },
        };
      }),
    ),
  );
}

async function runMember(
  ctx: DeployContext,
  m: Member,
  fn: (ops: HostOps) => Promise<HostOutcome>,
): Promise<HostResult> {
  return resultOf(rowOf(m), () => withHost(m.host, (_h, msg) => ctx.progress(rowOf(m), msg), fn));
}

function skipped(m: Member, why: string): HostResult {
  return failedResult(
    rowOf(m),
    new DeployError({ host: rowOf(m), failure: DeployFailure.refused, step: 'control-plane' }, why),
  );
}

/**
 * `install`'s first part: every deployed NATS server at once, then JetStream through each, then
 * every controller at once, then a controller answering. Nothing when the context has none.
 */
export async function installControlPlane(
  ctx: DeployContext,
  bundle: Bundle,
  force: boolean,
): Promise<HostResult[]> {
  const all = members(ctx.inv, ctx.hosts);
  const results: HostResult[] = [];
  for (const service of ['nats', 'controller'] as const) {
    const group = all.filter((m) => m.service === service);
    if (group.length === 0) continue;
    if (results.some((r) => !r.ok)) {
      results.push(...group.map((m) => skipped(m, 'not installed: the NATS servers failed')));
      continue;
    }
    const rows = await Promise.all(
      group.map((m) =>
        runMember(ctx, m, (ops) => applyMember(ctx, ops, m, bundle, { force, restart: false })),
      ),
    );
    // Ready means serving: JetStream through every server; a controller answering.
    for (const [i, m] of group.entries()) {
      const r = rows[i] as HostResult;
      if (!r.ok || (service === 'controller' && rows.findIndex((x) => x.ok) !== i)) continue;
      try {
        if (service === 'nats') await waitNats(ctx, m.host);
        else await waitController(ctx, rowOf(m));
      } catch (err) {
        rows[i] = { ...failedResult(r.host, err), changed: r.changed };
      }
    }
    results.push(...rows);
  }
  return results;
}

/**
 * `upgrade`'s control-plane part, after every host was staged: one member at a time, NATS
 * servers first, each restarted on the new release and serving again (JetStream through it, a
 * controller answering) before the next. The first failure stops the rolling upgrade.
 */
export async function upgradeControlPlane(
  ctx: DeployContext,
  bundle: Bundle,
): Promise<HostResult[]> {
  const results: HostResult[] = [];
  let stoppedAt: string | null = null;
  for (const m of members(ctx.inv, ctx.hosts)) {
    if (stoppedAt !== null) {
      results.push(skipped(m, `not upgraded: the rolling upgrade stopped at ${stoppedAt}`));
      continue;
    }
    let r = await runMember(ctx, m, async (ops) => {
      const node = (await requireFacts(ops)).node;
      const st = await ops.service(node, 'status', m.service);
      if (st.running && st.release === bundle.manifest.id) {
        // Already on the release: only its config is brought up to date.
        return applyMember(ctx, ops, m, bundle, { force: false, restart: false });
      }
      return applyMember(ctx, ops, m, bundle, { force: true, restart: true });
    });
    if (r.ok) {
      try {
        if (m.service === 'nats') await waitNats(ctx, m.host);
        else await waitController(ctx, rowOf(m));
      } catch (err) {
        r = { ...failedResult(r.host, err), changed: r.changed };
      }
    }
    results.push(r);
    if (!r.ok) stoppedAt = r.host;
  }
  return results;
}

/** `status` of the control plane: each member's service as its host sees it. */
export async function controlPlaneStatus(ctx: DeployContext): Promise<HostResult[]> {
  return Promise.all(
    members(ctx.inv, ctx.hosts).map((m) =>
      runMember(ctx, m, async (ops) => {
        const node = await ops.nodePath();
        const st: ServiceStatus = node
          ? await ops.service(node, 'status', m.service)
          : ({ installed: false, running: false } as ServiceStatus);
        const url =
          m.service === 'nats' && ctx.inv.nats.deploy
            ? natsUrlOf(m.host, ctx.inv.nats.deploy)
            : null;
        return {
          changed: false,
          detail: describe(st) + (url && st.running ? `, ${url}` : ''),
          data: { ...st, service: m.service, ...(url ? { url } : {}) },
        };
      }),
    ),
  );
}

/**
 * `check` of the control plane: where a NATS server is to run, is nats-server there (or will
 * setup install it)? Where a controller is to run, the agent's checks cover it (node).
 */
export async function checkControlPlane(ctx: DeployContext): Promise<HostResult[]> {
  return Promise.all(
    members(ctx.inv, ctx.hosts)
      .filter((m) => m.service === 'nats')
      .map((m) =>
        runMember(ctx, m, async (ops) => {
          const r = await ops.ssh.run(`"${NATS_BIN}" --version 2>&1\n`, { step: 'nats-version' });
          const version = /v?(\d+\.\d+\.\d+)/.exec(r.stdout)?.[1] ?? null;
          if (version === null && m.host.setup === 'none')
            throw new DeployError(
              { host: rowOf(m), failure: DeployFailure.requirement, step: 'check' },
              `no ${NATS_BIN} and \`setup: none\`: install nats-server >= 2.12 there (deploy/setup-host.sh does)`,
            );
          const port = ctx.inv.nats.deploy?.port;
          return {
            changed: false,
            detail:
              (version
                ? `nats-server ${version} at ${NATS_BIN}`
                : `no nats-server yet: setup installs it at ${NATS_BIN}`) +
              `; will listen on ${m.host.address}:${port}`,
            data: { version, path: NATS_BIN },
          };
        }),
      ),
  );
}

/**
 * `uninstall`'s last part, after every agent is gone: stop the controllers, then the NATS
 * servers, remove their units, then each control host's files (the install root, and with
 * `purge` the state directory with JetStream's store), and check nothing still runs from there.
 */
export async function uninstallControlPlane(
  ctx: DeployContext,
  purge: boolean,
): Promise<HostResult[]> {
  const all = members(ctx.inv, ctx.hosts);
  const order = [
    ...all.filter((m) => m.service === 'controller'),
    ...all.filter((m) => m.service === 'nats'),
  ];
  const results: HostResult[] = [];
  for (const m of order) {
    results.push(
      await runMember(ctx, m, async (ops) => {
        const node = await ops.nodePath();
        const st = node
          ? await ops.service<ServiceStatus & { changed?: boolean }>(node, 'stop', m.service)
          : null;
        const stopped = st?.changed === true;
        const unit = controlUnit(m.service);
        const r = await ops.ssh.run(
          'if [ -f "$1" ]; then (systemctl disable "$2" >/dev/null 2>&1 || true); rm -f "$1"; ' +
            '(systemctl daemon-reload >/dev/null 2>&1 || true); echo removed; fi\n',
          { step: 'unit', args: [unit.path, unit.unit] },
        );
        const unitRemoved = r.stdout.includes('removed');
        return {
          changed: stopped || unitRemoved,
          detail: `${stopped ? `${m.service} stopped` : 'not running'}${unitRemoved ? `, ${unit.unit} removed` : ''}`,
          data: { stopped, unitRemoved },
        };
      }),
    );
  }
  // The files go once per host, after both of its services stopped.
  const hosts = [...new Set(all.map((m) => m.host))];
  for (const host of hosts) {
    const m: Member = { host, service: all.find((x) => x.host === host)?.service ?? 'nats' };
    const row = results.find((x) => x.host === rowOf(m));
    const done = await runMember(ctx, m, async (ops) => {
      const removed = await ops.remove(purge);
      const left = await ops.processesUsing(host.installRoot);
      if (left.length > 0)
        throw new DeployError(
          { host: rowOf(m), failure: DeployFailure.command, step: 'verify' },
          `processes still use ${host.installRoot}: ${left.slice(0, 5).join('; ')}`,
          { details: { processes: left } },
        );
      return { changed: removed.length > 0, detail: `removed ${removed.join(', ') || 'nothing'}` };
    });
    if (row) {
      const i = results.indexOf(row);
      results[i] = done.ok
        ? { ...row, changed: row.changed || done.changed, detail: `${row.detail}; ${done.detail}` }
        : { ...done, changed: row.changed || done.changed };
    }
  }
  return results;
}
