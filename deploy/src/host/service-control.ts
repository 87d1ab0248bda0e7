/**
 * The verbs on a host's services: status, start and stop, through systemd (mode `systemd`) or the
 * deployer's supervisor (supervisor.ts), and the jobs still alive in the agent's state directory.
 * Part of `bin/drover-service.js` (service.ts): node: modules and siblings only.
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { cmdline, procStat, sameProcess, sleep, startedAtMs } from './proc.js';
import {
  AGENT_MAIN,
  currentRelease,
  labelOf,
  Layout,
  layoutOf,
  readJson,
  readSpec,
  type ServiceName,
  type ServiceStatus,
} from './service-spec.js';
import { liveSupervisor, stopSupervised } from './supervisor.js';

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

function systemctl(args: string[]): string {
  return execFileSync('systemctl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
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
