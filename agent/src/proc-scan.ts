/**
 * /proc readers for preflight: the process tree, open fds, file mappings, credentials.
 *
 * /proc's own files (status, fdinfo, maps, the fd links' text) are read synchronously: procfs
 * never waits for a device, and each asynchronous call costs two thread hand-offs through
 * libuv's pool, which a preflight makes a hundred times over (docs/PERFORMANCE.md, _Bottlenecks
 * found and fixed_, 15). What stands behind a link (`stat` of an fd's or a mapping's file) may
 * sit on a slow file system and is still asked asynchronously.
 */
import { processTree as nativeProcessTree } from '@drover/native';
import { readFileSync, readdirSync, readlinkSync, type Stats } from 'node:fs';
import { stat } from 'node:fs/promises';

/** `O_APPEND` in the octal `flags:` field of /proc/<pid>/fdinfo/<fd>. */
const O_APPEND = 0o2000;

/** True for the errors a process that exits mid-scan produces (ENOENT, ESRCH). */
export function isGone(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ENOENT' || code === 'ESRCH';
}

/** Run `fn`; return null when the process (or the fd) it reads went away meanwhile. */
async function unlessGone<T>(fn: () => Promise<T>): Promise<T | null> {
  try {
    return await fn();
  } catch (err) {
    if (isGone(err)) return null;
    throw err;
  }
}

/** `unlessGone` for a synchronous read of /proc. */
function unlessGoneSync<T>(fn: () => T): T | null {
  try {
    return fn();
  } catch (err) {
    if (isGone(err)) return null;
    throw err;
  }
}

/**
 * Every PID of the tree rooted at `rootPid`, root first (breadth-first), by reading
 * /proc/<pid>/task/<tid>/children of every thread (a child belongs to the thread that forked it).
 * Processes that exit during the walk are skipped; an empty list means the root is gone.
 */
export async function processTree(rootPid: number): Promise<number[]> {
  return nativeProcessTree(rootPid).map((p) => p.pid);
}

/** Credentials and state of one process, from /proc/<pid>/status. */
export interface ProcStatus {
  pid: number;
  name: string;
  /** One letter: R, S, D, T, t, Z, X, I … */
  state: string;
  /** Real, effective, saved, filesystem uid. */
  uids: number[];
  /** Real, effective, saved, filesystem gid. */
  gids: number[];
}

/** The status of `pid`, or null if it is gone. */
export async function readStatus(pid: number): Promise<ProcStatus | null> {
  const text = unlessGoneSync(() => readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (text === null) return null;
  const field = (key: string): string => {
    const line = text.split('\n').find((l) => l.startsWith(`${key}:`));
    return line === undefined ? '' : line.slice(key.length + 1).trim();
  };
  const ids = (key: string): number[] => field(key).split(/\s+/).filter(Boolean).map(Number);
  return {
    pid,
    name: field('Name'),
    state: field('State').charAt(0),
    uids: ids('Uid'),
    gids: ids('Gid'),
  };
}

/** True if our own effective capability set holds `cap` (a bit number, e.g. 24 = CAP_SYS_RESOURCE). */
export async function selfHasCapability(cap: number): Promise<boolean> {
  const text = readFileSync('/proc/self/status', 'utf8');
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(text)?.[1];
  return hex !== undefined && ((BigInt(`0x${hex}`) >> BigInt(cap)) & 1n) === 1n;
}

/** The network namespace of `pid` as `net:[inode]`, or null if gone. */
export async function netNamespace(pid: number): Promise<string | null> {
  return unlessGoneSync(() => readlinkSync(`/proc/${pid}/ns/net`));
}

/** One open file descriptor. */
export interface OpenFd {
  pid: number;
  fd: number;
  /** The link text: a path (as the process sees it), `socket:[N]`, `pipe:[N]`, `anon_inode:…`. */
  target: string;
}

/** The open fds of `pid` (empty if it is gone; fds closed meanwhile are skipped). */
export async function listFds(pid: number): Promise<OpenFd[]> {
  const names = unlessGoneSync(() => readdirSync(`/proc/${pid}/fd`));
  if (names === null) return [];
  const out: OpenFd[] = [];
  for (const name of names) {
    const target = unlessGoneSync(() => readlinkSync(`/proc/${pid}/fd/${name}`));
    if (target !== null) out.push({ pid, fd: Number(name), target });
  }
  return out;
}

/** The inode of a `socket:[N]` fd target, or null for anything else. */
export function socketInode(target: string): number | null {
  const m = /^socket:\[(\d+)\]$/.exec(target);
  return m?.[1] === undefined ? null : Number(m[1]);
}

/** stat() of what fd `fd` of `pid` refers to (through the magic link, so any mount namespace works). */
export function statFd(pid: number, fd: number): Promise<Stats | null> {
  return unlessGone(() => stat(`/proc/${pid}/fd/${fd}`));
}

/** Whether fd `fd` of `pid` was opened with O_APPEND (null if it is gone). */
export async function fdIsAppend(pid: number, fd: number): Promise<boolean | null> {
  const text = unlessGoneSync(() => readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
  if (text === null) return null;
  const flags = /^flags:\s*([0-7]+)$/m.exec(text)?.[1];
  return flags !== undefined && (parseInt(flags, 8) & O_APPEND) !== 0;
}

/** One file-backed mapping of a process. */
export interface FileMap {
  pid: number;
  /** `start-end` in hex, as in /proc/<pid>/maps and the name in /proc/<pid>/map_files. */
  range: string;
  path: string;
}

/** The distinct file-backed mappings of `pid` (first range per path), without anonymous ones. */
export async function fileMaps(pid: number): Promise<FileMap[]> {
  const text = unlessGoneSync(() => readFileSync(`/proc/${pid}/maps`, 'utf8'));
  if (text === null) return [];
  const byPath = new Map<string, FileMap>();
  for (const line of text.split('\n')) {
    // start-end perms offset dev inode path — the path may contain spaces.
    const m = /^([0-9a-f]+-[0-9a-f]+)\s+\S+\s+\S+\s+\S+\s+(\d+)\s+(\/.*)$/.exec(line);
    if (m === null || m[2] === '0' || m[1] === undefined || m[3] === undefined) continue;
    if (!byPath.has(m[3])) byPath.set(m[3], { pid, range: m[1], path: m[3] });
  }
  return [...byPath.values()];
}

/** stat() of the file behind one mapping (via map_files; needs CAP_SYS_ADMIN, which root has). */
export function statMap(map: FileMap): Promise<Stats | null> {
  return unlessGone(() => stat(`/proc/${map.pid}/map_files/${map.range}`));
}

/** The suffix the kernel gives a removed file's name in /proc links and maps. */
const DELETED = ' (deleted)';

/**
 * Allocated bytes (what CRIU's `--ghost-limit` counts: st_blocks × 512) of the largest regular
 * file the processes `pids` hold open or mapped after it was removed: a "ghost file", whose
 * contents CRIU carries in the images. 0 when there is none.
 */
export async function largestGhostBytes(pids: readonly number[]): Promise<number> {
  let largest = 0;
  const consider = (st: Stats | null): void => {
    if (st?.isFile() && st.nlink === 0) largest = Math.max(largest, st.blocks * 512);
  };
  for (const pid of pids) {
    for (const fd of await listFds(pid)) {
      if (fd.target.startsWith('/') && fd.target.endsWith(DELETED))
        consider(await statFd(pid, fd.fd));
    }
    for (const map of await fileMaps(pid)) {
      if (map.path.endsWith(DELETED)) consider(await statMap(map));
    }
  }
  return largest;
}
