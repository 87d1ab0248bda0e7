/** CPU time and memory of a process from /proc: what an agent or a controller cost during a run. */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { childrenOf, statFields } from '@drover/native';

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

/**
 * Where a cgroup's total CPU time is, from the text of /proc/PID/cgroup and /proc/self/mounts:
 * cgroup v1's `cpuacct.usage` (nanoseconds) or else v2's `cpu.stat` (`usage_usec`). Both count
 * every process of the cgroup and of the cgroups below it, exited ones included.
 */
export function cgroupCpuFile(
  cgroupText: string,
  mountsText: string,
): { path: string; v2: boolean } | null {
  const mounts = mountsText
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup' || f[2] === 'cgroup2');
  for (const line of cgroupText.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const [, controllers, path] = m;
    if (controllers!.split(',').includes('cpuacct')) {
      const mp = mounts.find((f) => f[2] === 'cgroup' && f[3]!.split(',').includes('cpuacct'));
      if (mp) return { path: `${mp[1]}${path === '/' ? '' : path}/cpuacct.usage`, v2: false };
    }
  }
  const v2 = /^0::(.*)$/m.exec(cgroupText)?.[1];
  const mp = mounts.find((f) => f[2] === 'cgroup2');
  return v2 !== undefined && mp
    ? { path: `${mp[1]}${v2 === '/' ? '' : v2}/cpu.stat`, v2: true }
    : null;
}

/** Parse a cgroup CPU file's text into seconds (see {@link cgroupCpuFile}). */
export function parseCgroupCpu(text: string, v2: boolean): number {
  if (!v2) return Number(text.trim()) / 1e9;
  const us = /^usage_usec (\d+)$/m.exec(text)?.[1];
  return us === undefined ? NaN : Number(us) / 1e6;
}

/** The CPU file of the cgroup holding `pid` (v1 cpuacct, else v2), or null. */
export function cgroupCpuOf(pid: number): { path: string; v2: boolean } | null {
  try {
    return cgroupCpuFile(
      readFileSync(`/proc/${pid}/cgroup`, 'utf8'),
      readFileSync('/proc/self/mounts', 'utf8'),
    );
  } catch {
    return null;
  }
}

/** Total CPU seconds of a cgroup now, NaN if it cannot be read. */
export function cgroupCpu(file: { path: string; v2: boolean } | null): number {
  if (!file) return NaN;
  try {
    return parseCgroupCpu(readFileSync(file.path, 'utf8'), file.v2);
  } catch {
    return NaN;
  }
}

/** Children of `pid` named `comm` (running, or exited and not yet reaped). */
export function childrenNamed(pid: number, comm: string): number[] {
  return childrenOf(pid).filter((c) => {
    try {
      return readFileSync(`/proc/${c}/comm`, 'utf8').trim() === comm;
    } catch {
      return false;
    }
  });
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

/** What a {@link ProcessMeter} measured of one process. */
export interface Metered {
  pid: number;
  /** CPU seconds of the process itself. */
  cpuSelf: number;
  /** CPU seconds of the children it reaped meanwhile (their own and their reaped children's). */
  cpuChildren: number;
  /** CPU seconds of everything in the process's cgroup (NaN if unreadable). */
  cpuCgroup: number;
  peakGrowthBytes: number;
}

/**
 * A meter over a set of processes: `start` resets their peaks and notes CPU and memory; `stop`
 * returns, per process, CPU seconds spent since (own, reaped children's, and its whole cgroup's)
 * and how far the peak resident set rose above the resident set at the start.
 */
export class ProcessMeter {
  private readonly startCpu = new Map<number, CpuTimes>();
  private readonly startRss = new Map<number, number>();
  private readonly cgroups = new Map<
    number,
    { file: ReturnType<typeof cgroupCpuOf>; t0: number }
  >();

  constructor(private readonly pids: readonly number[]) {}

  start(): void {
    for (const pid of this.pids) {
      resetPeak(pid);
      this.startCpu.set(pid, cpuTimes(pid) ?? { self: NaN, children: NaN });
      this.startRss.set(pid, memoryUse(pid)?.rssBytes ?? NaN);
      const file = cgroupCpuOf(pid);
      this.cgroups.set(pid, { file, t0: cgroupCpu(file) });
    }
  }

  stop(): Metered[] {
    return this.pids.map((pid) => {
      const c0 = this.startCpu.get(pid)!;
      const c1 = cpuTimes(pid) ?? { self: NaN, children: NaN };
      const m = memoryUse(pid);
      const cg = this.cgroups.get(pid)!;
      return {
        pid,
        cpuSelf: c1.self - c0.self,
        cpuChildren: c1.children - c0.children,
        cpuCgroup: cgroupCpu(cg.file) - cg.t0,
        peakGrowthBytes: m ? Math.max(0, m.peakBytes - this.startRss.get(pid)!) : NaN,
      };
    });
  }
}
