/** Reading process trees from /proc: descendants, namespace PIDs, states; waiting for exits. */
import { readdirSync, readFileSync } from 'node:fs';

/** One process as /proc shows it. */
export interface ProcInfo {
  /** Host (root namespace) PID. */
  pid: number;
  /** PIDs from the root namespace inward (`NSpid:`); the last one is the innermost. */
  nspid: number[];
  /** Single-letter state: R, S, D, T (stopped), Z (zombie)… */
  state: string;
  ppid: number;
  cmdline: string[];
}

/** Facts about `pid`, or null if it is gone. */
export function procInfo(pid: number): ProcInfo | null {
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
    cmdline: cmd.split('\0').filter(Boolean),
  };
}

/** Direct children of `pid` (all threads' children). */
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
      // the thread exited meanwhile
    }
  }
  return out;
}

/** `pid` and all its descendants, parents before children. */
export function processTree(pid: number): ProcInfo[] {
  const out: ProcInfo[] = [];
  const queue = [pid];
  while (queue.length) {
    const p = queue.shift()!;
    const info = procInfo(p);
    if (!info) continue;
    out.push(info);
    queue.push(...childrenOf(p));
  }
  return out;
}

/** True while `pid` exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  const info = procInfo(pid);
  return info !== null && info.state !== 'Z';
}

/** Wait until every PID is gone or a zombie; throws after `timeoutMs`. */
export async function waitGone(pids: readonly number[], timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = pids.filter(isAlive);
    if (alive.length === 0) return;
    if (Date.now() > deadline)
      throw new Error(`still alive after ${timeoutMs} ms: ${alive.join(', ')}`);
    await sleep(20);
  }
}

/** Wait until `check()` returns a value other than undefined; throws after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 5000,
  intervalMs = 20,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Send `signal` to each PID that is still alive (never to anything else). */
export function killPids(pids: readonly number[], signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const pid of pids) {
    if (!isAlive(pid)) continue;
    try {
      process.kill(pid, signal);
    } catch {
      // raced with its exit
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Every live process whose command line contains `marker` (e.g. a unique directory). */
export function findByCmdline(marker: string): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const info = procInfo(Number(name));
    if (info && info.state !== 'Z' && info.cmdline.join(' ').includes(marker)) out.push(info);
  }
  return out;
}
