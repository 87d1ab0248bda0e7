#!/usr/bin/env node
/**
 * The host side of the deployer, shipped in every release as `bin/drover-service.js` and run
 * with the host's node: start, stop and report the agent (through systemd where the host runs
 * it, else as a supervised background service), list the jobs still alive, and the supervisor
 * loop itself. Self-contained on purpose (node: modules only, one file): it must work from a
 * bare release directory. Every verb prints one JSON line on stdout.
 *
 * The supervisor keeps `<root>/run/supervisor.json` with its own and the agent's PID and start
 * time; `stop` signals a PID only after checking that it is still the same process.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * `<root>/etc/service.json`: how this host runs its agent (written by the deployer); the other
 * services of the host (the NATS server, the controller) have `<root>/etc/<name>-service.json`.
 */
export interface ServiceSpec {
  format: 1;
  /**
   * The command of a service other than the agent: argv, with `@RELEASE@` standing for the
   * directory of the release it runs from (absent: the agent of the release, with `config`).
   */
  exec?: string[];
  mode: 'systemd' | 'supervisor';
  /** systemd unit name (mode systemd). */
  unit: string;
  /** The host's node binary. */
  node: string;
  /** The agent's JSON config file. */
  config: string;
  stateDir: string;
  /** PATH for the agent (CRIU lives in /usr/local/sbin). */
  path: string;
}

/** `<root>/run/supervisor.json`, kept by the supervisor. */
export interface PidRecord {
  format: 1;
  pid: number;
  startTicks: number;
  agentPid: number | null;
  agentStartTicks: number | null;
  /** The release the agent runs (directory name under releases/). */
  release: string | null;
  restarts: number;
}

/** What `status` (and `start`/`stop`) report. */
export interface ServiceStatus {
  installed: boolean;
  mode: ServiceSpec['mode'] | null;
  running: boolean;
  supervisorPid: number | null;
  agentPid: number | null;
  /** The release the running agent was started from. */
  release: string | null;
  /** The release `current` points to. */
  current: string | null;
  /** The label of the running (else the current) release, from its BUNDLE.json. */
  label: string | null;
  /** Epoch ms (this host's clock) the agent process started. */
  agentStartedAtMs: number | null;
  restarts: number;
  /** This host's clock when the status was taken. */
  nowMs: number;
}

/** Relative paths under the install root (the agent's). */
export const Layout = {
  spec: 'etc/service.json',
  pidFile: 'run/supervisor.json',
  agentLog: 'log/agent.log',
  supervisorLog: 'log/supervisor.log',
  current: 'current',
} as const;

/** The services a host may run: the agent, and the control plane's. */
export const SERVICE_NAMES = ['agent', 'nats', 'controller'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** Relative paths of service `name` under the install root (the agent's are {@link Layout}). */
export function layoutOf(name: ServiceName): {
  spec: string;
  pidFile: string;
  agentLog: string;
  supervisorLog: string;
  current: string;
} {
  if (name === 'agent') return Layout;
  return {
    spec: `etc/${name}-service.json`,
    pidFile: `run/${name}-supervisor.json`,
    agentLog: `log/${name}.log`,
    supervisorLog: `log/${name}-supervisor.log`,
    current: Layout.current,
  };
}

/** The placeholder of {@link ServiceSpec.exec} for the release directory. */
export const RELEASE_DIR = '@RELEASE@';

const AGENT_MAIN = '/agent/dist/main.js';
const LOG_ROTATE_BYTES = 64 * 1024 * 1024;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

let clkTck = 0;
/** Clock ticks per second for /proc/<pid>/stat start times. */
function ticksPerSecond(): number {
  if (clkTck === 0) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** State and start time (clock ticks since boot) of a PID, or null when there is no such process. */
export function procStat(pid: number): { state: string; startTicks: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces and parentheses).
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0] ?? '?', startTicks: Number(rest[19]) };
  } catch {
    return null;
  }
}

/** True when `pid` is alive (not a zombie) and started at `startTicks`: the same process. */
export function sameProcess(pid: number | null, startTicks: number | null): boolean {
  if (pid === null || startTicks === null || pid <= 0) return false;
  const st = procStat(pid);
  return st !== null && st.state !== 'Z' && st.startTicks === startTicks;
}

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/** Epoch ms at which a process started (from its start ticks and the boot time). */
function startedAtMs(pid: number): number | null {
  const st = procStat(pid);
  if (!st) return null;
  const btime = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1] ?? 0);
  return Math.round(btime * 1000 + (st.startTicks * 1000) / ticksPerSecond());
}

/**
 * The release directory name in a service's command line (`.../releases/<id>/agent/dist/main.js`,
 * or any `/releases/<id>/` path for the other services).
 */
function releaseOf(pid: number, name: ServiceName = 'agent'): string | null {
  const args = cmdline(pid);
  const main = args.find((a) => a.endsWith(AGENT_MAIN));
  if (name === 'agent') return main ? basename(main.slice(0, -AGENT_MAIN.length)) : null;
  for (const a of args) {
    const m = /\/releases\/([^/]+)\//.exec(a);
    if (m) return m[1] ?? null;
  }
  return null;
}

function readJson<T>(path: string): T | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return null;
  }
}

function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(value) + '\n', { mode: 0o644 });
  renameSync(tmp, path);
}

function currentRelease(root: string): string | null {
  try {
    return basename(realpathSync(join(root, Layout.current)));
  } catch {
    return null;
  }
}

/** A release's label (BUNDLE.json `release`). */
function labelOf(root: string, id: string | null): string | null {
  if (!id) return null;
  return readJson<{ release?: string }>(join(root, 'releases', id, 'BUNDLE.json'))?.release ?? null;
}

function readSpec(root: string, name: ServiceName = 'agent'): ServiceSpec {
  const path = join(root, layoutOf(name).spec);
  const spec = readJson<ServiceSpec>(path);
  if (!spec || spec.format !== 1) throw new Error(`${path} is missing or bad`);
  return spec;
}

function systemctl(args: string[]): string {
  return execFileSync('systemctl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The supervisor's record, if the supervisor it names is alive (else null). */
function liveSupervisor(root: string, name: ServiceName = 'agent'): PidRecord | null {
  const rec = readJson<PidRecord>(join(root, layoutOf(name).pidFile));
  if (!rec || rec.format !== 1) return null;
  if (!sameProcess(rec.pid, rec.startTicks)) return null;
  // A reused PID with the same start tick is impossible; the command line is a second check.
  const cmd = cmdline(rec.pid);
  if (!cmd.some((a) => a.endsWith('drover-service.js')) || !cmd.includes('run')) return null;
  const i = cmd.indexOf('--name');
  if ((i < 0 ? 'agent' : cmd[i + 1]) !== name) return null;
  return rec;
}

/** The agent's state on this host. */
export function status(root: string, name: ServiceName = 'agent'): ServiceStatus {
  const st = rawStatus(root, name);
  return { ...st, label: labelOf(root, st.release ?? st.current) };
}

function rawStatus(root: string, name: ServiceName): ServiceStatus {
  const L = layoutOf(name);
  const nowMs = Date.now();
  const base: ServiceStatus = {
    installed: existsSync(join(root, L.spec)),
    mode: null,
    running: false,
    supervisorPid: null,
    agentPid: null,
    release: null,
    current: currentRelease(root),
    label: null,
    agentStartedAtMs: null,
    restarts: 0,
    nowMs,
  };
  if (!base.installed) return base;
  const spec = readSpec(root, name);
  base.mode = spec.mode;
  if (spec.mode === 'systemd') {
    const out = systemctl([
      'show',
      '-p',
      'MainPID',
      '-p',
      'ActiveState',
      '-p',
      'NRestarts',
      spec.unit,
    ]);
    const prop = (k: string): string => new RegExp(`^${k}=(.*)$`, 'm').exec(out)?.[1] ?? '';
    const pid = Number(prop('MainPID'));
    base.restarts = Number(prop('NRestarts')) || 0;
    if (prop('ActiveState') === 'active' && pid > 0) {
      Object.assign(base, {
        running: true,
        agentPid: pid,
        release: releaseOf(pid, name) ?? (name === 'agent' ? null : base.current),
        agentStartedAtMs: startedAtMs(pid),
      });
    }
    return base;
  }
  const rec = liveSupervisor(root, name);
  if (!rec) return base;
  const agentAlive = sameProcess(rec.agentPid, rec.agentStartTicks);
  return {
    ...base,
    running: agentAlive,
    supervisorPid: rec.pid,
    agentPid: agentAlive ? rec.agentPid : null,
    release: agentAlive ? rec.release : null,
    agentStartedAtMs: agentAlive && rec.agentPid ? startedAtMs(rec.agentPid) : null,
    restarts: rec.restarts,
  };
}

/** Send `signal` to `pid` only if it is still the process that started at `startTicks`. */
function killChecked(pid: number | null, startTicks: number | null, signal: NodeJS.Signals): void {
  if (pid !== null && sameProcess(pid, startTicks)) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone meanwhile
    }
  }
}

async function waitGone(
  pid: number | null,
  startTicks: number | null,
  ms: number,
): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (sameProcess(pid, startTicks)) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

/** Start the agent unless it runs. */
export async function start(
  root: string,
  self: string,
  name: ServiceName = 'agent',
): Promise<ServiceStatus & { changed: boolean; startedAtMs: number | null }> {
  const L = layoutOf(name);
  const before = status(root, name);
  if (before.running) return { ...before, changed: false, startedAtMs: null };
  const spec = readSpec(root, name);
  if (!before.current) throw new Error(`${join(root, Layout.current)} names no release`);
  mkdirSync(join(root, 'run'), { recursive: true, mode: 0o755 });
  mkdirSync(join(root, 'log'), { recursive: true, mode: 0o750 });
  // A supervisor that lost its agent, or an agent whose supervisor died: end both first.
  await stopSupervised(root, 20_000, name);
  const startedAt = Date.now();
  if (spec.mode === 'systemd') {
    systemctl(['start', spec.unit]);
  } else {
    const out = openSync(join(root, L.supervisorLog), 'a', 0o640);
    try {
      const child = spawn(process.execPath, [self, 'run', '--root', root, '--name', name], {
        detached: true, // its own session: survives the SSH channel that started it
        stdio: ['ignore', out, out],
        cwd: '/',
        env: { PATH: spec.path, LANG: 'C.UTF-8', HOME: process.env.HOME ?? '/root' },
      });
      child.unref();
    } finally {
      closeSync(out);
    }
  }
  const deadline = Date.now() + 20_000;
  for (;;) {
    const st = status(root, name);
    if (st.running) return { ...st, changed: true, startedAtMs: startedAt };
    if (Date.now() > deadline) {
      throw new Error(`the ${name} did not start within 20 s (see ${join(root, L.agentLog)})`);
    }
    await sleep(50);
  }
}

/** Stop a supervised agent and its supervisor (checked PIDs); true if something was running. */
async function stopSupervised(
  root: string,
  timeoutMs: number,
  name: ServiceName = 'agent',
): Promise<boolean> {
  const pidFile = join(root, layoutOf(name).pidFile);
  const rec = readJson<PidRecord>(pidFile);
  if (!rec) return false;
  let acted = false;
  if (liveSupervisor(root, name)) {
    acted = true;
    // The supervisor forwards SIGTERM to the agent, waits for it, and exits.
    killChecked(rec.pid, rec.startTicks, 'SIGTERM');
    if (!(await waitGone(rec.pid, rec.startTicks, timeoutMs))) {
      killChecked(rec.pid, rec.startTicks, 'SIGKILL');
      await waitGone(rec.pid, rec.startTicks, 5000);
    }
  }
  // An agent left behind by a supervisor that was killed outright.
  const last = readJson<PidRecord>(pidFile) ?? rec;
  if (sameProcess(last.agentPid, last.agentStartTicks)) {
    acted = true;
    killChecked(last.agentPid, last.agentStartTicks, 'SIGTERM');
    if (!(await waitGone(last.agentPid, last.agentStartTicks, 15_000))) {
      killChecked(last.agentPid, last.agentStartTicks, 'SIGKILL');
      await waitGone(last.agentPid, last.agentStartTicks, 5000);
    }
  }
  rmSync(pidFile, { force: true });
  return acted;
}

/** Stop the agent (its jobs keep running). */
export async function stop(
  root: string,
  name: ServiceName = 'agent',
): Promise<ServiceStatus & { changed: boolean }> {
  if (!existsSync(join(root, layoutOf(name).spec)))
    return { ...status(root, name), changed: false };
  const spec = readSpec(root, name);
  let changed: boolean;
  if (spec.mode === 'systemd') {
    changed = status(root, name).running;
    if (changed) systemctl(['stop', spec.unit]);
  } else {
    changed = await stopSupervised(root, 25_000, name);
  }
  const after = status(root, name);
  if (after.running) throw new Error(`the ${name} (pid ${after.agentPid}) is still running`);
  return { ...after, changed };
}

/** Jobs whose record says they live and whose root process is still the recorded one. */
export function liveJobs(
  stateDir: string,
): { id: string; name: string; state: string; rootPid: number }[] {
  const dir = join(stateDir, 'jobs');
  let ids: string[];
  try {
    ids = readdirSync(dir);
  } catch {
    return [];
  }
  const out: { id: string; name: string; state: string; rootPid: number }[] = [];
  for (const id of ids) {
    const r = readJson<{
      name?: string;
      state?: string;
      rootPid?: number | null;
      rootStartTicks?: number | null;
    }>(join(dir, id, 'record.json'));
    if (!r || !r.rootPid) continue;
    if (['exited', 'lost', 'migrated', 'checkpointed'].includes(r.state ?? '')) continue;
    const alive =
      r.rootStartTicks != null
        ? sameProcess(r.rootPid, r.rootStartTicks)
        : (procStat(r.rootPid)?.state ?? 'Z') !== 'Z';
    if (alive) out.push({ id, name: r.name ?? '', state: r.state ?? '', rootPid: r.rootPid });
  }
  return out;
}

/**
 * The supervisor: run the agent from `current`, restart it when it exits (backing off from 1 s to
 * 30 s; back to 1 s after a minute of running), forward SIGTERM/SIGINT and exit once it is gone.
 */
export async function supervise(root: string, name: ServiceName = 'agent'): Promise<void> {
  const spec = readSpec(root, name);
  const L = layoutOf(name);
  const pidFile = join(root, L.pidFile);
  const self = procStat(process.pid);
  const rec: PidRecord = {
    format: 1,
    pid: process.pid,
    startTicks: self?.startTicks ?? 0,
    agentPid: null,
    agentStartTicks: null,
    release: null,
    restarts: 0,
  };
  let stopping = false;
  let child: ChildProcess | null = null;
  let wake: () => void = () => {};
  const onSignal = (): void => {
    stopping = true;
    wake();
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      setTimeout(() => child?.kill('SIGKILL'), 20_000).unref();
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', () => {}); // a closing SSH session must not end the service
  writeJsonAtomic(pidFile, rec);
  let backoffMs = 1000;
  while (!stopping) {
    const releaseDir = realpathSync(join(root, L.current));
    const log = join(root, L.agentLog);
    try {
      if (statSync(log).size > LOG_ROTATE_BYTES) renameSync(log, `${log}.1`);
    } catch {
      // no log yet
    }
    const out = openSync(log, 'a', 0o640);
    const startedAt = Date.now();
    try {
      const [file, ...args] = spec.exec
        ? spec.exec.map((a) => a.split(RELEASE_DIR).join(releaseDir))
        : [spec.node, join(releaseDir, AGENT_MAIN.slice(1)), '--config', spec.config];
      child = spawn(file ?? spec.node, args, {
        stdio: ['ignore', out, out],
        cwd: '/',
        env: { PATH: spec.path, LANG: 'C.UTF-8', HOME: process.env.HOME ?? '/root' },
      });
    } finally {
      closeSync(out);
    }
    const c = child;
    const exited = new Promise<void>((r) => {
      c.once('exit', () => r());
      c.once('error', () => r());
    });
    rec.agentPid = c.pid ?? null;
    rec.agentStartTicks = c.pid ? (procStat(c.pid)?.startTicks ?? null) : null;
    rec.release = basename(releaseDir);
    writeJsonAtomic(pidFile, rec);
    await exited;
    process.stderr.write(
      `${new Date().toISOString()} ${name} exited (code ${c.exitCode}, signal ${c.signalCode})\n`,
    );
    if (stopping) break;
    if (Date.now() - startedAt > 60_000) backoffMs = 1000;
    rec.restarts++;
    await new Promise<void>((r) => {
      wake = r;
      setTimeout(r, backoffMs);
    });
    backoffMs = Math.min(backoffMs * 2, 30_000);
  }
  // Remove the record only if it is still ours (a newer supervisor may have replaced it).
  if (readJson<PidRecord>(pidFile)?.pid === process.pid) rmSync(pidFile, { force: true });
}

function arg(argv: readonly string[], name: string): string {
  const i = argv.indexOf(name);
  const v = i >= 0 ? argv[i + 1] : undefined;
  if (!v) throw new Error(`${name} is required`);
  return v;
}

/** The `--name` of a verb (default `agent`), checked. */
function nameArg(argv: readonly string[]): ServiceName {
  if (!argv.includes('--name')) return 'agent';
  const n = arg(argv, '--name');
  if (!(SERVICE_NAMES as readonly string[]).includes(n))
    throw new Error(`unknown service ${n}; use ${SERVICE_NAMES.join(', ')}`);
  return n as ServiceName;
}

/**
 * `drover-service.js <status|start|stop|run|jobs> --root DIR [--name agent|nats|controller]
 * | --state-dir DIR`.
 */
export async function main(argv: readonly string[]): Promise<void> {
  const verb = argv[0];
  const self = fileURLToPath(import.meta.url);
  const print = (v: unknown): void => void process.stdout.write(JSON.stringify(v) + '\n');
  switch (verb) {
    case 'status':
      return print(status(arg(argv, '--root'), nameArg(argv)));
    case 'start':
      return print(await start(arg(argv, '--root'), self, nameArg(argv)));
    case 'stop':
      return print(await stop(arg(argv, '--root'), nameArg(argv)));
    case 'jobs':
      return print({ jobs: liveJobs(arg(argv, '--state-dir')) });
    case 'run':
      return supervise(arg(argv, '--root'), nameArg(argv));
    default:
      throw new Error(`unknown verb ${verb ?? '(none)'}; use status, start, stop, jobs or run`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`drover-service: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
