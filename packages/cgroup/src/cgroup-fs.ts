/** Async helpers for cgroup files: read, write, list PIDs, walk, poll, mkdir/rmdir, serialize. */
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, readdir, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode } from '@drover/common';
import { CgroupError, cgroupFsError, errnoOf } from './errors.js';

export { sleep };

/** Read a cgroup file as trimmed text. */
export async function readText(path: string): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (err) {
    throw cgroupFsError(err, 'read', path);
  }
}

/**
 * Write a cgroup control file. Each write must be a single write(2): the kernel parses one value
 * per call, so no appending, no buffering.
 */
export async function writeText(path: string, value: string): Promise<void> {
  try {
    await writeFile(path, value, { flag: 'w' });
  } catch (err) {
    throw cgroupFsError(err, 'write', path);
  }
}

/**
 * {@link readText} and {@link writeText} in the calling thread: for a cut, where each async call's
 * trips through the thread pool and the event loop would spread the freezes over milliseconds on a
 * busy host. Cgroup control files live in kernel memory: each call takes microseconds.
 */
export function readTextSync(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw cgroupFsError(err, 'read', path);
  }
}

/** See {@link readTextSync}. */
export function writeTextSync(path: string, value: string): void {
  try {
    writeFileSync(path, value, { flag: 'w' });
  } catch (err) {
    throw cgroupFsError(err, 'write', path);
  }
}

/** The PIDs listed in `<dir>/cgroup.procs` (this cgroup only, not its children). */
export async function readProcs(dir: string): Promise<number[]> {
  const text = await readText(join(dir, 'cgroup.procs'));
  return text === '' ? [] : text.split('\n').map((line) => Number.parseInt(line, 10));
}

/** `dir` and every cgroup below it, parents before children. Missing `dir` gives []. */
export async function walkCgroups(dir: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    const e = cgroupFsError(err, 'readdir', dir);
    if (e.code === ErrorCode.NotFound) return [];
    throw e;
  }
  const out = [dir];
  for (const entry of entries) {
    if (entry.isDirectory()) out.push(...(await walkCgroups(join(dir, entry.name))));
  }
  return out;
}

/** Every PID in `dir` and its descendants, deduplicated. */
export async function readProcsTree(dir: string): Promise<number[]> {
  const all = new Set<number>();
  for (const d of await walkCgroups(dir)) {
    try {
      for (const pid of await readProcs(d)) all.add(pid);
    } catch (err) {
      // A child cgroup removed while we walk is not an error.
      if (!(err instanceof CgroupError && err.code === ErrorCode.NotFound)) throw err;
    }
  }
  return [...all];
}

/** Options for {@link pollUntil}. */
export interface PollOptions {
  /** Give up after this long. */
  timeoutMs: number;
  /** Time between checks. */
  intervalMs: number;
  /** Message of the Timeout error. */
  what: string;
  /** Path reported in the Timeout error. */
  path: string;
}

/** Call `check` until it returns true; a Timeout CgroupError (retryable) after `timeoutMs`. */
export async function pollUntil(
  check: () => Promise<boolean>,
  options: PollOptions,
): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() >= deadline) {
      throw new CgroupError(ErrorCode.Timeout, `${options.what} after ${options.timeoutMs} ms`, {
        path: options.path,
        op: 'wait',
        retryable: true,
      });
    }
    await sleep(options.intervalMs);
  }
}

/** Freezer operations on one cgroup run one at a time in this process (keyed by directory). */
const chains = new Map<string, Promise<unknown>>();

export async function serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const run = (chains.get(key) ?? Promise.resolve()).then(fn, fn);
  const tail = run.catch(() => undefined);
  chains.set(key, tail);
  try {
    return await run;
  } finally {
    if (chains.get(key) === tail) chains.delete(key);
  }
}

/**
 * {@link serialized} over several keys at once. They are taken one after the other in sorted order
 * (why: two callers each holding a key the other waits for would wait forever).
 */
export function serializedAll<T>(keys: readonly string[], fn: () => Promise<T>): Promise<T> {
  const sorted = [...new Set(keys)].sort();
  const take = (i: number): Promise<T> =>
    i === sorted.length ? fn() : serialized(sorted[i]!, () => take(i + 1));
  return take(0);
}

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** mkdir; true if created, false if it already was a directory. */
export async function makeDir(dir: string, recursive: boolean): Promise<boolean> {
  try {
    // A recursive mkdir returns the first directory it created, undefined if all existed.
    const first = await mkdir(dir, { recursive });
    return recursive ? first !== undefined : true;
  } catch (err) {
    if (errnoOf(err) !== 'EEXIST') throw cgroupFsError(err, 'mkdir', dir);
    const s = await stat(dir);
    if (!s.isDirectory()) {
      throw new CgroupError(
        ErrorCode.InvalidArgument,
        `${dir} exists and is not a cgroup directory`,
        {
          path: dir,
          op: 'mkdir',
          errno: 'EEXIST',
        },
      );
    }
    return false;
  }
}

/** rmdir, retrying EBUSY (the kernel may still count exiting tasks); ENOENT is success. */
export async function removeDir(dir: string, timeoutMs: number, intervalMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await rmdir(dir);
      return;
    } catch (err) {
      const errno = errnoOf(err);
      if (errno === 'ENOENT') return;
      if (errno !== 'EBUSY' || Date.now() >= deadline) throw cgroupFsError(err, 'rmdir', dir);
      await sleep(intervalMs);
    }
  }
}
