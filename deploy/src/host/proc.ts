/**
 * Processes on this host as /proc shows them: a PID's state and start time, and signalling or
 * waiting for a PID only while it is still the same process. Part of `bin/drover-service.js`
 * (service.ts): node: modules, siblings and `@drover/native/procfs` (the one process-identity
 * check; it reads /proc with node:fs only, so the bundle stays koffi-free here).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { isSameLiveProcess, procStat as readProcStat } from '@drover/native/procfs';

export function sleep(ms: number): Promise<void> {
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
  return readProcStat(pid);
}

/** True when `pid` is alive (not a zombie) and started at `startTicks`: the same process. */
export function sameProcess(pid: number | null, startTicks: number | null): boolean {
  return pid !== null && startTicks !== null && pid > 0 && isSameLiveProcess(pid, startTicks);
}

export function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/** Epoch ms at which a process started (from its start ticks and the boot time). */
export function startedAtMs(pid: number): number | null {
  const st = procStat(pid);
  if (!st) return null;
  const btime = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1] ?? 0);
  return Math.round(btime * 1000 + (st.startTicks * 1000) / ticksPerSecond());
}

/** Send `signal` to `pid` only if it is still the process that started at `startTicks`. */
export function killChecked(
  pid: number | null,
  startTicks: number | null,
  signal: NodeJS.Signals,
): void {
  if (pid !== null && sameProcess(pid, startTicks)) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone meanwhile
    }
  }
}

export async function waitGone(
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
