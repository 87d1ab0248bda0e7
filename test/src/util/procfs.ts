/** Reading process trees from /proc: descendants, namespace PIDs, states; waiting for exits. */
import { readdirSync } from 'node:fs';

export { childrenOf, processTree } from '@drover/native';
import { procEntry, type ProcEntry } from '@drover/native';

/** One process as /proc shows it (see @drover/native). */
export type ProcInfo = ProcEntry;

/** Facts about `pid`, or null if it is gone. */
export const procInfo = procEntry;

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
