/** Test-only fixture: start a workload directly or in its own namespaces, dump and restore it with the criu CLI, and end it by PID. */
import { childrenOf, JOB_NAMESPACE_FLAGS, procEntry, processTree } from '@drover/native';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
export const CRIU = '/usr/local/sbin/criu';

/**
 * Runs as the namespace's PID 1 before tini: drop inherited fds above 2; detach the nsfs mounts
 * copied from the host (`ip netns add` leaves them in /run/netns: they would pin other jobs' network
 * namespaces, and once their owner deletes them the restore fails with "mnt-v2: Can't stat
 * mountpoint ..."); open stdio inside the new mount namespace (stdio opened outside points at host
 * mounts CRIU cannot look up); then become tini, a session leader inside the namespace (CRIU
 * refuses a session leader outside it).
 */
const NS_INIT_SHELL = `log=$1; shift
for fd in /proc/$$/fd/*; do fd=\${fd##*/}; [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-"; done
mapfile -t mounts < /proc/self/mountinfo
for m in "\${mounts[@]}"; do
  case "$m" in *' - nsfs '*) read -ra f <<< "$m"; umount -l "\${f[4]}" 2>/dev/null ;; esac
done
exec </dev/null >>"$log" 2>&1
exec setsid tini -s -- "$@"`;

/** A started job: the process we spawned, and an AbortSignal that fires when it exits. */
export interface StartedJob {
  child: ChildProcess;
  /** Host PID of what we spawned (the workload itself, or `unshare` for a namespaced job). */
  pid: number;
  exited: AbortSignal;
}

function track(child: ChildProcess): StartedJob {
  const ac = new AbortController();
  child.once('exit', (code, sig) => ac.abort(new Error(`exited (${code ?? sig})`)));
  child.once('error', (err) => ac.abort(err));
  if (child.pid === undefined) throw new Error('spawn failed');
  return { child, pid: child.pid, exited: ac.signal };
}

/** Start `argv` as a plain child of this process, stdout and stderr appended to `logFile`. */
export function startDirect(
  argv: string[],
  env: Record<string, string>,
  logFile: string,
): StartedJob {
  const fd = openSync(logFile, 'a');
  try {
    const [file, ...args] = argv as [string, ...string[]];
    return track(spawn(file, args, { env, cwd: '/', stdio: ['ignore', fd, fd] }));
  } finally {
    closeSync(fd);
  }
}

/** Start `argv` under tini in fresh PID, mount, UTS and IPC namespaces, its stdio on `logFile`. */
export function startInNamespace(
  argv: string[],
  env: Record<string, string>,
  logFile: string,
): StartedJob {
  const unshare = ['/usr/bin/unshare', ...JOB_NAMESPACE_FLAGS, '--'];
  const args = [...unshare, '/bin/bash', '-c', NS_INIT_SHELL, 'ns-init', logFile, ...argv];
  // Not detached: then `setsid` is no group leader and execs in place, so child.pid is unshare's.
  return track(spawn('/usr/bin/setsid', args, { env, cwd: '/', stdio: 'ignore' }));
}

/** Every live descendant of `pid`, parents before children. */
export async function descendants(pid: number): Promise<number[]> {
  return processTree(pid)
    .slice(1)
    .filter((p) => p.state !== 'Z')
    .map((p) => p.pid);
}

/** The single child of `pid`, waiting for it to appear. */
export async function onlyChild(pid: number, timeoutMs = 5000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const kids = childrenOf(pid).filter((c) => procEntry(c)?.state !== 'Z');
    if (kids.length === 1 && kids[0] !== undefined) return kids[0];
    if (Date.now() > deadline)
      throw new Error(`pid ${pid} has children [${kids.join(', ')}], expected one`);
    await sleep(20);
  }
}

/** True when `pid` no longer runs (absent, or a zombie nobody reaped yet). */
export async function isGone(pid: number): Promise<boolean> {
  const e = procEntry(pid);
  return e === null || e.state === 'Z';
}

/** The PIDs a process has in its nested PID namespaces, outermost first (/proc/<pid>/status NSpid). */
export async function nsPids(pid: number): Promise<number[]> {
  return procEntry(pid)?.nspid ?? [];
}

/** SIGKILL `pid` and all its descendants, each by PID. Processes already gone are skipped. */
export async function killTree(pid: number): Promise<void> {
  const pids = [pid, ...(await descendants(pid))];
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** The `Error` lines of a CRIU log, minus the harmless RLIMIT_NOFILE one of these machines. */
async function criuErrors(log: string): Promise<string> {
  const text = await readFile(log, 'utf8').catch(() => '');
  const errors = text
    .split('\n')
    .filter((l) => /Error|err:/.test(l) && !l.includes('RLIMIT_NOFILE'));
  return errors.slice(-8).join('\n');
}

async function criu(args: string[], log: string): Promise<void> {
  try {
    await execFileP(CRIU, args, { timeout: 60_000 });
  } catch (err) {
    throw new Error(`criu ${args[0]} failed:\n${await criuErrors(log)}`, { cause: err });
  }
}

/** Dump the tree rooted at the namespace init `initPid` into `imgDir` (log: dump.log there). */
export async function dumpJob(
  initPid: number,
  imgDir: string,
  leaveRunning = false,
): Promise<void> {
  const args = [
    'dump',
    '-t',
    String(initPid),
    '-D',
    imgDir,
    '--external',
    'mnt[]',
    '-o',
    'dump.log',
  ];
  if (leaveRunning) args.push('--leave-running');
  await criu(args, path.join(imgDir, 'dump.log'));
}

/**
 * Restore the images in `imgDir`, detached. The root is a PID-namespace init, so CRIU restores it into
 * a fresh PID namespace (same PIDs inside); resolves with the restored init's host PID.
 */
export async function restoreJob(imgDir: string): Promise<number> {
  const pidfile = path.join(imgDir, 'restored.pid');
  const args = [
    'restore',
    '-D',
    imgDir,
    '--root',
    '/',
    '--external',
    'mnt[]',
    '-d',
    '-o',
    'restore.log',
  ];
  await criu([...args, '--pidfile', pidfile], path.join(imgDir, 'restore.log'));
  return Number((await readFile(pidfile, 'utf8')).trim());
}
