/** What Drover reads from /proc about processes: identity (start time), trees, namespace PIDs. */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** One process as /proc shows it. */
export interface ProcEntry {
  pid: number;
  /** PIDs from the agent's namespace inward (`NSpid:`). */
  nspid: number[];
  state: string;
  ppid: number;
  uid: number;
  cmdline: string[];
}

/** Start time of `pid` in clock ticks since boot (field 22 of stat), or null if gone. */
export function startTicks(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may contain spaces and parentheses: fields start after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const v = Number(rest[19]);
    return Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}

/** Session id of `pid` (field 6 of stat), or null. */
export function sessionId(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[3]);
  } catch {
    return null;
  }
}

/** Facts about `pid`, or null if it is gone. */
export function procEntry(pid: number): ProcEntry | null {
  let status: string;
  let cmd: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
    cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return null;
  }
  const field = (name: string): string =>
    new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '';
  return {
    pid,
    nspid: field('NSpid').split(/\s+/).filter(Boolean).map(Number),
    state: field('State').charAt(0),
    ppid: Number(field('PPid')),
    uid: Number(field('Uid').split(/\s+/)[0]),
    cmdline: cmd.split('\0').filter(Boolean),
  };
}

/** Direct children of `pid` (children of all its threads). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    } catch {
      // thread gone
    }
  }
  return out;
}

/** `pid` and its descendants, parents first. */
export function processTree(pid: number): ProcEntry[] {
  const out: ProcEntry[] = [];
  const queue = [pid];
  const seen = new Set<number>();
  while (queue.length) {
    const p = queue.shift()!;
    if (seen.has(p)) continue;
    seen.add(p);
    const e = procEntry(p);
    if (!e) continue;
    out.push(e);
    queue.push(...childrenOf(p));
  }
  return out;
}

/** True while `pid` exists, is not a zombie, and (if given) has the recorded start time. */
export function isSameLiveProcess(pid: number, ticks: number | null): boolean {
  const e = procEntry(pid);
  if (!e || e.state === 'Z') return false;
  return ticks === null || startTicks(pid) === ticks;
}

/** The executable of `pid` (readlink of /proc/PID/exe), or null. */
export function exeOf(pid: number): string | null {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return null;
  }
}
