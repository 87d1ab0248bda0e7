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

/** The fields of `/proc/<pid>/stat` Drover reads. */
export interface ProcStat {
  /** State letter (field 3): R, S, D, Z (zombie), X (dead)... */
  state: string;
  /** Parent PID (field 4). */
  ppid: number;
  /** Session id (field 6). */
  session: number;
  /** Start time in clock ticks since boot (field 22): with the PID, one process across reuse. */
  startTicks: number;
}

/**
 * The fields of a `/proc/<pid>/stat` text after the command name: `[state, ppid, ...]`, so
 * field N of proc(5) is at index N - 3. The command name may hold spaces and parentheses:
 * the fields start after its last ')'.
 */
export function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** `/proc/<pid>/stat` of `pid`, or null if it is gone. */
export function procStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const f = statFields(text);
  return {
    state: f[0] ?? '?',
    ppid: Number(f[1]),
    session: Number(f[3]),
    startTicks: Number(f[19]),
  };
}

/** Start time of `pid` in clock ticks since boot (field 22 of stat), or null if gone. */
export function startTicks(pid: number): number | null {
  const v = procStat(pid)?.startTicks;
  return v !== undefined && Number.isFinite(v) ? v : null;
}

/** Session id of `pid` (field 6 of stat), or null. */
export function sessionId(pid: number): number | null {
  return procStat(pid)?.session ?? null;
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

/**
 * "Is this PID still the same process": true while `pid` exists, is neither a zombie nor dead,
 * and (if given) has the recorded start time. The one check of process identity in the tree.
 */
export function isSameLiveProcess(pid: number, ticks: number | null): boolean {
  const st = procStat(pid);
  if (!st || st.state === 'Z' || st.state === 'X') return false;
  return ticks === null || st.startTicks === ticks;
}

/** The executable of `pid` (readlink of /proc/PID/exe), or null. */
export function exeOf(pid: number): string | null {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return null;
  }
}
