/** Small helpers over /proc and child processes: identity checks, PID lookups, running commands. */
import { childrenOf, isSameLiveProcess, procStat, startTicks } from '@drover/native';
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync, readlinkSync, readdirSync } from 'node:fs';

/** What a finished command produced. `code` is the exit status, or 128 + signal number. */
export interface ExecResult {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Options for {@link run}. */
export interface RunOptions {
  /** Kill the command (SIGKILL) after this many ms. Default 30 000. */
  timeoutMs?: number;
  /** Written to the command's stdin, then stdin is closed. */
  input?: string;
  env?: NodeJS.ProcessEnv;
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

/** Run a command from the root namespace and collect its output; never rejects on a non-zero exit. */
export function run(cmd: readonly string[], opts: RunOptions = {}): Promise<ExecResult> {
  const [file, ...args] = cmd;
  if (file === undefined) return Promise.reject(new Error('run: empty command'));
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        timeout: opts.timeoutMs ?? 30_000,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
        ...(opts.env === undefined ? {} : { env: opts.env }),
      },
      (err, stdout, stderr) => {
        const e = err as
          (NodeJS.ErrnoException & { code?: unknown; signal?: NodeJS.Signals }) | null;
        if (e && typeof e.code === 'string') {
          reject(e); // spawn failure (ENOENT...), not an exit status
          return;
        }
        const signal = e?.signal ?? null;
        const code =
          signal !== null ? 128 + (SIGNALS[signal] ?? 0) : typeof e?.code === 'number' ? e.code : 0;
        resolve({ code, signal, stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/** Run a command and throw (with its stderr) unless it exits 0; returns stdout. */
export async function mustRun(cmd: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(cmd, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd.join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r.stdout;
}

/** Synchronous best-effort command for exit handlers: never throws, returns whether it exited 0. */
export function runSync(cmd: readonly string[]): boolean {
  const [file, ...args] = cmd;
  if (file === undefined) return false;
  try {
    execFileSync(file, args, { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** Read a /proc file, or undefined when the process is gone. */
function procRead(pid: number, file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
}

/** The process state letter (R, S, Z...), or undefined when it no longer exists. */
export function procState(pid: number): string | undefined {
  return procStat(pid)?.state;
}

/** True when the process exists and is not a zombie (a zombie has already let go of everything). */
export function isAlive(pid: number): boolean {
  return isSameLiveProcess(pid, null);
}

/** Start time in clock ticks since boot: with the PID, it names one process across PID reuse. */
export function startTime(pid: number): number | undefined {
  return startTicks(pid) ?? undefined;
}

/** Basename of /proc/PID/exe (e.g. `tini`), or undefined when gone or unreadable. */
export function exeName(pid: number): string | undefined {
  try {
    const target = readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '');
    return target.slice(target.lastIndexOf('/') + 1);
  } catch {
    return undefined;
  }
}

/** The argv of a process (empty for zombies and kernel threads). */
export function cmdline(pid: number): string[] {
  const raw = procRead(pid, 'cmdline');
  if (!raw) return [];
  return raw.split('\0').filter((s, i, a) => s !== '' || i < a.length - 1);
}

/** The environment of a process as `K=V` strings (empty when unreadable). */
export function environ(pid: number): string[] {
  return (procRead(pid, 'environ') ?? '').split('\0').filter((s) => s !== '');
}

/** Direct children of a process (all of its threads). */
export const children = childrenOf;

/** The PID of a process as seen from its innermost PID namespace (last NSpid entry). */
export function innerPid(pid: number): number | undefined {
  const m = /^NSpid:\s+(.*)$/m.exec(procRead(pid, 'status') ?? '');
  const last = m?.[1]?.trim().split(/\s+/).pop();
  return last === undefined ? undefined : Number(last);
}

/** The namespace inode a process is in, e.g. nsInode(pid, 'net'), or undefined. */
export function nsInode(pid: number, ns: 'net' | 'pid' | 'mnt'): string | undefined {
  try {
    return /\[(\d+)\]/.exec(readlinkSync(`/proc/${pid}/ns/${ns}`))?.[1];
  } catch {
    return undefined;
  }
}

/** Every numeric entry of /proc. */
export function allPids(): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number);
}

/** A root-namespace process a testbed owns (killed by checked PID on teardown). */
export interface OwnedProcess {
  pid: number;
  startTime: number | undefined;
  exe: readonly string[];
}

/**
 * Send a signal only if `pid` is still the process we mean: same start time and expected exe.
 * Returns false (and sends nothing) when it is gone, a zombie, or someone else.
 */
export function killChecked(
  pid: number,
  signal: NodeJS.Signals,
  expect: { startTime?: number; exe?: readonly string[] },
): boolean {
  if (!isSameLiveProcess(pid, expect.startTime ?? null)) return false;
  if (expect.exe !== undefined) {
    const exe = exeName(pid);
    if (exe === undefined || !expect.exe.includes(exe)) return false;
  }
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Resolve after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Thrown from a {@link waitFor} probe to stop waiting at once (e.g. the process died). */
export class StopWaiting extends Error {}

/** Poll `probe` every `everyMs` until it returns a value other than undefined, or throw on timeout. */
export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  everyMs = 10,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      if (err instanceof StopWaiting) throw err;
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastErr });
    }
    await sleep(everyMs);
  }
}
