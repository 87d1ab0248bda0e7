/**
 * The local cluster behind `drover up` / `drover down`: NATS with JetStream, N emulated hosts
 * with an agent in each, and the controller, all on this machine, outliving the command that
 * started them. What was started is recorded in `<dir>/cluster.json` (local-state.ts); the
 * testbed run under `<dir>/<runId>` holds everything else (hosts' state, NATS storage, logs).
 */
import { mkdirSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Bus, ControllerClient } from '@drover/bus';
import { DroverError, ErrorCode } from '@drover/common';
import { isSameLiveProcess } from '@drover/native';
import { AgentCluster } from './agents.js';
import { leaks, removeRun, sweepLeftovers, type Leftover } from './cleanup.js';
import { ControllerProcess } from './controller.js';
import { natsServerBin } from './nats-bin.js';
import { hostRecipe, restartDead, rootRecipe } from './local-restart.js';
import { sameProcess } from './names.js';
import { exeName, killChecked, run, sleep, startTime } from './proc.js';
import { Testbed } from './testbed.js';
import {
  DEFAULT_LOCAL_DIR,
  localStatePath,
  readLocalState,
  writeLocalState,
  type LocalClusterState,
  type LocalProcess,
} from './local-state.js';

/** Options of {@link localUp}. */
export interface LocalUpOptions {
  /** The local cluster's directory. Default {@link DEFAULT_LOCAL_DIR}. */
  dir?: string;
  /** Emulated hosts (h1..hN), 1..99. Default 3. */
  hosts?: number;
  /** Told what is happening while it starts (one line each). */
  onProgress?: (line: string) => void;
  /** How long the controller may take to see every host. Default 60 000 ms. */
  timeoutMs?: number;
  /**
   * Without TLS and roles (`drover up --insecure`). Default false: a CA and certificates in the
   * run directory, NATS requires TLS and holds each identity to its role, and drover commands
   * use the operator's certificate (recorded in the state file).
   */
  insecure?: boolean;
}

/** What {@link localUp} did. */
export interface LocalUpResult {
  state: LocalClusterState;
  /** True when a healthy cluster of that size was already up and nothing was started. */
  already: boolean;
  /** What was dead and has been started again (`the agent on h2`, `the controller`, `NATS`). */
  restarted?: string[];
}

/** How a recorded local cluster is doing. */
export interface LocalHealth {
  state: LocalClusterState;
  /** Recorded processes that are gone (or are no longer the same process). */
  dead: LocalProcess[];
  /** Hosts the controller reports reachable, when it answered. */
  reachable: string[] | undefined;
  /** Everything recorded is alive and the controller sees every host. */
  healthy: boolean;
}

/** What {@link localDown} did. */
export interface LocalDownResult {
  /** The cluster's run, if one was recorded. */
  runId: string | undefined;
  /** Runs removed (the recorded one and leftovers of crashed `up`s in the directory). */
  removed: string[];
  /** PIDs that were signalled. */
  killed: number[];
}

/** Agents beat every second here; a host silent for 5 s is unreachable. */
const HEARTBEAT_MS = 1000;
const UNREACHABLE_MS = 5000;

/** Commands the local cluster needs on this machine, with what provides them. */
const NEEDED = ['ip', 'nsenter', 'unshare', 'tini'] as const;

/** The dir a caller gave, or the default. */
function dirOf(dir: string | undefined): string {
  return dir ?? DEFAULT_LOCAL_DIR;
}

/** Refuse early, saying why, when this machine cannot run a local cluster. */
async function preflight(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      'drover up needs root (network, PID and mount namespaces, cgroups, CRIU)',
    );
  }
  const missing: string[] = [];
  for (const cmd of NEEDED) {
    const r = await run(['sh', '-c', 'command -v "$1"', 'sh', cmd]).catch(() => undefined);
    if (r?.code !== 0) missing.push(cmd);
  }
  if (missing.length > 0) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `missing on this machine: ${missing.join(', ')} (deploy/setup-host.sh installs them)`,
      { details: { missing } },
    );
  }
  await natsServerBin(); // one at least NATS_SERVER_MIN, or a FAILED_PRECONDITION saying what is there
}

/** The recorded process `p` still exists and is the same process. */
function alive(p: LocalProcess): boolean {
  return sameProcess(p) && exeName(p.pid) === p.exe;
}

/** Record of a process of ours that is running now. */
function recordOf(role: LocalProcess['role'], name: string, pid: number): LocalProcess {
  return { role, name, pid, startTime: startTime(pid) ?? 0, exe: exeName(pid) ?? '?' };
}

/** Ask the controller which hosts it sees as reachable; undefined when it does not answer. */
async function reachableHosts(
  natsUrl: string,
  tls: LocalClusterState['tls'],
  timeoutMs = 5000,
): Promise<string[] | undefined> {
  let bus: Bus | undefined;
  try {
    bus = await Bus.connect({
      servers: [natsUrl],
      name: 'drover-local',
      requestTimeoutMs: 5000,
      ...(tls ? { tls } : {}),
    });
    const r = await new ControllerClient(bus).call('hosts', {}, timeoutMs);
    return r.hosts.filter((h) => h.reachable).map((h) => h.host);
  } catch {
    return undefined;
  } finally {
    await bus?.close();
  }
}

/** How the local cluster recorded in `dir` is doing, or undefined when none is recorded. */
export async function localHealth(dir?: string): Promise<LocalHealth | undefined> {
  const state = readLocalState(dirOf(dir));
  if (!state) return undefined;
  const dead = state.processes.filter((p) => !alive(p));
  const reachable =
    state.phase === 'up' && state.natsUrl !== undefined && dead.length === 0
      ? await reachableHosts(state.natsUrl, state.tls)
      : undefined;
  const healthy =
    state.phase === 'up' && dead.length === 0 && (reachable?.length ?? -1) === state.hosts;
  return { state, dead, reachable, healthy };
}

/** Why a recorded cluster is not healthy, for a human. */
function whatIsWrong(h: LocalHealth): string {
  if (h.dead.length > 0) {
    return h.dead
      .map((p) =>
        p.role === 'agent'
          ? `the agent on ${p.name}`
          : p.role === 'host'
            ? `host ${p.name}`
            : p.name,
      )
      .join(', ')
      .concat(h.dead.length === 1 ? ' has exited' : ' have exited');
  }
  if (h.reachable === undefined) return 'the controller does not answer';
  return `the controller sees ${h.reachable.length} of ${h.state.hosts} hosts`;
}

/**
 * Refuse, saying what is there, when `dir` already holds a local cluster: unless it is up,
 * healthy and of the size asked for, in which case it is returned as it is.
 */
async function existing(dir: string, hosts: number): Promise<LocalClusterState | undefined> {
  const h = await localHealth(dir);
  if (!h) return undefined;
  const s = h.state;
  const what = `a local cluster${s.runId ? ` (run ${s.runId})` : ''} in ${dir}`;
  if (s.phase === 'starting') {
    if (isSameLiveProcess(s.upPid, s.upStartTime)) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `${what} is being started by drover up (pid ${s.upPid}); wait for it`,
        { details: { dir, upPid: s.upPid } },
      );
    }
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `${what} was left half-started by a drover up (pid ${s.upPid}) that died; ` +
        '`drover down` removes what it left',
      { details: { dir, upPid: s.upPid } },
    );
  }
  if (!h.healthy) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `${what} is up but unhealthy: ${whatIsWrong(h)}; \`drover down\` removes it, then \`drover up\`` +
        ' (drover up restarts a dead agent, controller or NATS itself; a dead host takes this)',
      { details: { dir, dead: h.dead.map((p) => p.name) } },
    );
  }
  if (s.hosts !== hosts) {
    throw new DroverError(
      ErrorCode.AlreadyExists,
      `${what} is already up with ${s.hosts} host(s), not ${hosts}; \`drover down\` first`,
      { details: { dir, hosts: s.hosts } },
    );
  }
  return s;
}

/** Take the directory: create the state file only if none exists (two `up`s never both win). */
function claim(dir: string, hosts: number): LocalClusterState {
  const state: LocalClusterState = {
    version: 1,
    phase: 'starting',
    dir,
    upPid: process.pid,
    upStartTime: startTime(process.pid) ?? 0,
    createdAt: new Date().toISOString(),
    hosts,
    processes: [],
  };
  try {
    writeFileSync(localStatePath(dir), JSON.stringify(state, null, 2) + '\n', { flag: 'wx' });
  } catch (err) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `another drover up is starting a local cluster in ${dir}`,
      { cause: err, details: { dir } },
    );
  }
  return state;
}

/**
 * Start a local cluster in `dir` and leave it running: NATS, `hosts` emulated hosts with an agent
 * in each, the controller; resolves once the controller sees every host and the run is handed
 * over to its own processes. A healthy cluster of the same size already up is reported as it is;
 * anything else already there is refused (FAILED_PRECONDITION or ALREADY_EXISTS) with what to do.
 * On failure everything started is removed again.
 */
export async function localUp(opts: LocalUpOptions = {}): Promise<LocalUpResult> {
  const dir = dirOf(opts.dir);
  const hosts = opts.hosts ?? 3;
  const say = opts.onProgress ?? (() => {});
  if (!Number.isInteger(hosts) || hosts < 1 || hosts > 99) {
    throw new DroverError(ErrorCode.InvalidArgument, `--hosts wants 1..99, got ${hosts}`);
  }
  await preflight();
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  // Dead agents, a dead controller or NATS are started again (jobs untouched): local-restart.ts.
  const h = await localHealth(dir);
  if (h && h.state.phase === 'up' && h.dead.length > 0 && h.state.hosts === hosts) {
    const r = await restartDead(
      h.state,
      h.dead,
      say,
      async (s) => (await reachableHosts(s.natsUrl ?? '', s.tls, 2000))?.length,
    );
    if (r) return { state: r.state, already: false, restarted: r.restarted };
  }
  const already = await existing(dir, hosts);
  if (already) return { state: already, already: true };
  // Leftovers of earlier `up`s that died (their owners are gone) go first; live runs stay.
  await sweepLeftovers({ baseDir: dir, onlyBaseDir: true });
  let state = claim(dir, hosts);

  // Ctrl-C while starting: the testbed's exit handler tears the run down; the claim goes too.
  const onSignal = (sig: NodeJS.Signals): void => {
    rmSync(localStatePath(dir), { force: true });
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGHUP' ? 1 : 15));
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const s of signals) process.once(s, onSignal);

  let tb: Testbed | undefined;
  let agents: AgentCluster | undefined;
  let ctl: ControllerProcess | undefined;
  try {
    const secure = opts.insecure !== true;
    say(
      `starting ${hosts} emulated host(s) and NATS with JetStream in ${dir}` +
        (secure ? ' (TLS and roles: a CA and certificates for every identity)' : ' (INSECURE)'),
    );
    tb = await Testbed.create({ hosts, nats: 'single', baseDir: dir, secure });
    const natsUrl = tb.nats?.urls[0] ?? '';
    const tls = tb.certs ? { ...tb.certs.operator } : undefined;
    state = {
      ...state,
      runId: tb.runId,
      runDir: tb.runDir,
      logDir: tb.logDir,
      natsUrl,
      ...(tls ? { tls } : {}),
      hostList: tb.hosts.map((h) => ({ name: h.name, address: h.address })),
    };
    writeLocalState(state);
    say(`starting an agent in each host`);
    agents = await AgentCluster.start(tb, { heartbeatMs: HEARTBEAT_MS, logLevel: 'info' });
    say('starting the controller');
    ctl = await ControllerProcess.start(tb, {
      id: `local-${tb.runId}`,
      unreachableMs: UNREACHABLE_MS,
      logLevel: 'info',
    });
    say(`waiting until the controller sees ${hosts} host(s)`);
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
    for (;;) {
      const seen = await reachableHosts(natsUrl, tls, 2000);
      if (seen?.length === hosts) break;
      if (Date.now() > deadline) {
        throw new DroverError(
          ErrorCode.Timeout,
          `the controller saw ${seen?.length ?? 0} of ${hosts} hosts in time (logs: ${tb.logDir})`,
        );
      }
      await sleep(200);
    }
    const nats = tb.nats?.servers[0];
    const natsPid = nats?.pid();
    const runId = tb.runId;
    // Each process with how to start it again, should it die (local-restart.ts).
    state = {
      ...state,
      phase: 'up',
      metrics: {
        controller: ctl.metricsUrl,
        agents: Object.fromEntries(agents.agents.map((a) => [a.hostId, a.metricsUrl])),
      },
      processes: [
        ...(natsPid === undefined || nats === undefined
          ? []
          : [
              {
                ...recordOf('nats', 'nats', natsPid),
                relaunch: rootRecipe(natsPid, {
                  stdout: nats.logPaths[0] ?? '/dev/null',
                  stderr: nats.logPaths[1] ?? '/dev/null',
                }),
              },
            ]),
        {
          ...recordOf('controller', 'controller', ctl.pid),
          relaunch: rootRecipe(ctl.pid, { stdout: '/dev/null', stderr: ctl.logPath }),
        },
        ...tb.hosts.map((h) => recordOf('host', h.name, h.initPid)),
        ...agents.agents.flatMap((a) =>
          a.process
            ? [
                {
                  ...recordOf('agent', a.hostId, a.process.pid),
                  relaunch: hostRecipe(runId, a.hostId, a.process.pid, {
                    stdout: a.process.stdoutPath,
                    stderr: a.process.stderrPath,
                  }),
                },
              ]
            : [],
        ),
      ],
    };
    await agents.close();
    // Ordering: the owner record names its keepers before the state says `up`, so no sweep
    // can take the run for dead once this process is gone.
    tb.detach();
    writeLocalState(state);
    return { state, already: false };
  } catch (err) {
    const failure =
      err instanceof DroverError
        ? err
        : new DroverError(ErrorCode.Internal, String((err as Error)?.message ?? err), {
            cause: err,
          });
    await agents?.close().catch(() => {});
    await ctl?.kill().catch((e: unknown) => failure.suppress(e));
    await tb?.teardown().catch((e: unknown) => failure.suppress(e));
    rmSync(localStatePath(dir), { force: true });
    throw failure;
  } finally {
    for (const s of signals) process.off(s, onSignal);
  }
}

/**
 * Remove the local cluster in `dir` completely and idempotently: every recorded process (by PID,
 * after checking it is the same process), then everything of its run (processes by identity,
 * namespaces, links, cgroups, the run directory), leftovers of `up`s that died half-way, the state
 * file and the directory if nothing else is in it. Refuses (FAILED_PRECONDITION) while a
 * `drover up` is still starting it. Throws INTERNAL, listing them, if anything is left.
 */
export async function localDown(dir?: string): Promise<LocalDownResult> {
  const d = dirOf(dir);
  const state = readLocalState(d);
  if (state?.phase === 'starting' && isSameLiveProcess(state.upPid, state.upStartTime)) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `drover up (pid ${state.upPid}) is still starting the local cluster in ${d}; wait for it, or stop it and run drover down again`,
      { details: { dir: d, upPid: state.upPid } },
    );
  }
  const result: LocalDownResult = { runId: state?.runId, removed: [], killed: [] };
  // The controller first (it would otherwise see hosts vanish and act on it), then the rest.
  const order: LocalProcess['role'][] = ['controller', 'agent', 'host', 'nats'];
  for (const role of order) {
    for (const p of state?.processes.filter((x) => x.role === role) ?? []) {
      if (killChecked(p.pid, 'SIGKILL', { startTime: p.startTime, exe: [p.exe] })) {
        result.killed.push(p.pid);
      }
    }
  }
  if (state?.runId !== undefined) {
    const r = await removeRun(state.runId, { baseDir: d });
    result.removed.push(state.runId);
    result.killed.push(...r.killed);
  }
  const swept = await sweepLeftovers({ baseDir: d, onlyBaseDir: true });
  result.removed.push(...swept.swept.filter((id) => !result.removed.includes(id)));
  result.killed.push(...swept.killed);
  // Host processes and netns devices can take a moment to go; look again before reporting.
  const left = await settle(result.removed, d, state?.processes ?? []);
  if (left.length > 0) {
    const list = left.map((l) => `${l.kind} ${l.name}`).join(', ');
    throw new DroverError(
      ErrorCode.Internal,
      `drover down left ${left.length} resource(s): ${list}`,
      {
        details: { dir: d, leftovers: left },
      },
    );
  }
  rmSync(localStatePath(d), { force: true });
  removeIfEmpty(join(d, 'subnets'));
  removeIfEmpty(d);
  return result;
}

/**
 * Wait (≤ 10 s) for the removed runs to leave nothing; returns what remains. The recorded
 * processes are waited for by identity too: a host's init that was killed stays in its exit
 * (no exe, no environment, so no leak check sees it) until every process of its PID namespace
 * has been reaped, which this machine's PID 1 may take seconds to do for orphans.
 */
async function settle(
  runIds: readonly string[],
  dir: string,
  recorded: readonly LocalProcess[],
): Promise<Leftover[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const left = runIds.flatMap((id) => leaks(id, dir));
    for (const p of recorded) {
      if (sameProcess(p))
        left.push({ kind: 'process', name: String(p.pid), detail: `${p.role} ${p.name}` });
    }
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(100);
  }
}

function removeIfEmpty(dir: string): void {
  try {
    if (readdirSync(dir).length === 0) rmdirSync(dir);
  } catch {
    // missing, or not empty: both fine
  }
}
