/** CPU time and memory of a process from /proc: what an agent or a controller cost during a run. */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { statFields } from '@drover/native';

let ticks: number | undefined;

/** Clock ticks per second (`getconf CLK_TCK`; 100 on Linux in practice). */
function clockTicks(): number {
  if (ticks === undefined) {
    try {
      ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

/** CPU seconds of a process: its own (user + system) and its reaped children's. */
export interface CpuTimes {
  self: number;
  children: number;
}

/** Parse the text of /proc/PID/stat into CPU seconds (fields 14-17, after the command name). */
export function parseStat(text: string, hz: number): CpuTimes {
  const rest = statFields(text);
  // rest[0] is field 3 (state); utime is field 14 → rest[11].
  const f = (i: number): number => Number(rest[i] ?? 0);
  return { self: (f(11) + f(12)) / hz, children: (f(13) + f(14)) / hz };
}

/** CPU seconds of `pid` now, or null if it is gone. */
export function cpuTimes(pid: number): CpuTimes | null {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'), clockTicks());
  } catch {
    return null;
  }
}

/** Resident memory of a process: now, and its peak since start or the last `resetPeak`. */
export interface MemoryUse {
  rssBytes: number;
  peakBytes: number;
}

/** Parse VmRSS and VmHWM out of /proc/PID/status. */
export function parseStatus(text: string): MemoryUse {
  const kb = (key: string): number =>
    Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return { rssBytes: kb('VmRSS') * 1024, peakBytes: kb('VmHWM') * 1024 };
}

/** Memory of `pid` now, or null if it is gone. */
export function memoryUse(pid: number): MemoryUse | null {
  try {
    return parseStatus(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return null;
  }
}

/** Reset the peak resident set (VmHWM) of `pid` to its current size (`clear_refs` = 5). */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/**
 * A meter over a set of processes: `start` resets their peaks and notes CPU and memory; `stop`
 * returns, per process, CPU seconds spent since (own and reaped children's) and how far the
 * peak resident set rose above the resident set at the start.
 */
export class ProcessMeter {
  private readonly startCpu = new Map<number, CpuTimes>();
  private readonly startRss = new Map<number, number>();

  constructor(private readonly pids: readonly number[]) {}

  start(): void {
    for (const pid of this.pids) {
      resetPeak(pid);
      this.startCpu.set(pid, cpuTimes(pid) ?? { self: NaN, children: NaN });
      this.startRss.set(pid, memoryUse(pid)?.rssBytes ?? NaN);
    }
  }

  stop(): { pid: number; cpuSelf: number; cpuChildren: number; peakGrowthBytes: number }[] {
    return this.pids.map((pid) => {
      const c0 = this.startCpu.get(pid)!;
      const c1 = cpuTimes(pid) ?? { self: NaN, children: NaN };
      const m = memoryUse(pid);
      return {
        pid,
        cpuSelf: c1.self - c0.self,
        cpuChildren: c1.children - c0.children,
        peakGrowthBytes: m ? Math.max(0, m.peakBytes - this.startRss.get(pid)!) : NaN,
      };
    });
  }
}
