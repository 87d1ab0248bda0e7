/**
 * The supervisor (`drover-service.js run`): runs a service from `current` and restarts it, keeping
 * `<root>/run/supervisor.json` (its own and the service's PID and start time); and finding and
 * stopping a supervisor by that record. Part of `bin/drover-service.js` (service.ts): node:
 * modules and siblings only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { cmdline, killChecked, procStat, sameProcess, waitGone } from './proc.js';
import {
  AGENT_MAIN,
  layoutOf,
  readJson,
  readSpec,
  RELEASE_DIR,
  writeJsonAtomic,
  type PidRecord,
  type ServiceName,
} from './service-spec.js';

const LOG_ROTATE_BYTES = 64 * 1024 * 1024;

/** The supervisor's record, if the supervisor it names is alive (else null). */
export function liveSupervisor(root: string, name: ServiceName = 'agent'): PidRecord | null {
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

/** Stop a supervised agent and its supervisor (checked PIDs); true if something was running. */
export async function stopSupervised(
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
