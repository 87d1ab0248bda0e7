/** Scratch directories for images in flight: on tmpfs, so a migration never writes images to disk. */
import { lstatSync, readdirSync, rmdirSync, unlinkSync, type Dirent } from 'node:fs';
import { mkdir, readdir, readFile, readlink, rm, rmdir, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { runCommand } from '@drover/native';
import { parseMountinfo } from '../job-mounts.js';

const TMPFS_MAGIC = 0x01021994;

/** Candidate RAM-backed roots, best first. */
const ROOTS = ['/dev/shm', '/run'];

/** True when `path` is on tmpfs. */
export async function isTmpfs(path: string): Promise<boolean> {
  try {
    return (await statfs(path)).type === TMPFS_MAGIC;
  } catch {
    return false;
  }
}

/** The first of `roots` that is on tmpfs: where scratch directories are made. */
async function tmpfsRoot(roots: readonly string[] = ROOTS): Promise<string | null> {
  for (const root of roots) if (await isTmpfs(root)) return root;
  return null;
}

/**
 * Create `<tmpfs root>/drover/<hostId>/<migrationId>/<name>` (0700). Falls back to the state
 * directory only when the host has no tmpfs at all; `onDisk` says so, and the record notes it.
 */
export async function makeScratch(
  hostId: string,
  migrationId: string,
  name: string,
  fallbackDir: string,
): Promise<{ dir: string; onDisk: boolean }> {
  const root = await tmpfsRoot();
  if (root !== null) {
    const dir = join(root, 'drover', hostId, migrationId, name);
    // Retried once: a finishing migration may remove the (then empty) parents meanwhile.
    await mkdir(dir, { recursive: true, mode: 0o700 }).catch(() =>
      mkdir(dir, { recursive: true, mode: 0o700 }),
    );
    return { dir, onDisk: false };
  }
  const dir = join(fallbackDir, 'scratch', migrationId, name);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return { dir, onDisk: true };
}

/**
 * The tmpfs option that makes the scratch fast: the page cache of a file written in large
 * sequential writes (CRIU's page images) is kept in large folios instead of 4 KiB pages, so
 * writing, reading and freeing 64 MiB of images takes about a fifth of the CPU
 * (docs/MIGRATION.md, _Scratch on large folios_). Small files still take 4 KiB pages
 * (`within_size`, unlike `always`, never gives a 3 KiB file a 2 MiB page).
 */
export const SCRATCH_TMPFS_OPTION = 'huge=within_size';

/** What {@link mountScratch} found or did. */
export type ScratchMount =
  | { state: 'mounted' | 'present'; path: string; options: string }
  | { state: 'directory'; path: string | null; reason: string };

/**
 * Give the scratch directories (`<tmpfs root>/drover`) a tmpfs of their own, root-only, with
 * large folios ({@link SCRATCH_TMPFS_OPTION}) and the size of the tmpfs it sits on (so a limit
 * the host set on /dev/shm holds for it too). Called at the agent's start; the mount outlives
 * the agent (a restarted agent finds it: `present`). Left as a plain directory — where the host
 * has no tmpfs, where the directory still holds an earlier run's scratch (mounting would hide
 * it; the next start mounts), or where the kernel refuses the option — with the reason.
 */
export async function mountScratch(
  run: typeof runCommand = runCommand,
  mountinfo = '/proc/self/mountinfo',
  roots: readonly string[] = ROOTS,
): Promise<ScratchMount> {
  const root = await tmpfsRoot(roots);
  if (root === null) return { state: 'directory', path: null, reason: 'no tmpfs' };
  const path = join(root, 'drover');
  const row = parseMountinfo(await readFile(mountinfo, 'utf8'))
    .reverse()
    .find((m) => m.mountpoint === path);
  if (row) return { state: 'present', path, options: row.superOptions };
  await mkdir(path, { recursive: true, mode: 0o700 });
  if ((await readdir(path)).length > 0) {
    return { state: 'directory', path, reason: "it holds an earlier run's scratch" };
  }
  const st = await statfs(root);
  const options = `mode=0700,size=${st.blocks * st.bsize},${SCRATCH_TMPFS_OPTION}`;
  const r = await run('mount', ['-t', 'tmpfs', '-o', options, 'drover-scratch', path], {
    timeoutMs: 10_000,
  });
  if (r.code !== 0) {
    return { state: 'directory', path, reason: `mount: ${r.stderr.trim() || `exit ${r.code}`}` };
  }
  return { state: 'mounted', path, options };
}

/** A tmpfs scratch directories are made on: its mount point and free bytes. */
export interface ScratchSpace {
  readonly root: string;
  readonly freeBytes: number;
}

/** The tmpfs `makeScratch` would use and its free bytes, or null (scratch would be on disk). */
export async function scratchSpace(): Promise<ScratchSpace | null> {
  const root = await tmpfsRoot();
  if (root === null) return null;
  // The scratch's own tmpfs where mountScratch made one, else the root's.
  const st = await statfs(join(root, 'drover')).catch(() => statfs(root));
  return { root, freeBytes: st.bavail * st.bsize };
}

/** Where this host's scratch directories are made: `<tmpfs root>/drover/<hostId>` and the fallback. */
export function scratchRoots(hostId: string, fallbackDir: string): string[] {
  return [...ROOTS.map((root) => join(root, 'drover', hostId)), join(fallbackDir, 'scratch')];
}

/**
 * Remove every scratch directory of a migration. `inline` removes the RAM-backed ones' small
 * files on the calling thread: a migration's scratch holds ~45 of CRIU's small images, and
 * removing each through libuv's thread pool costs two thread hand-offs per file and per
 * directory walk — a tenth of an agent's CPU per move (docs/PERFORMANCE.md, _Bottlenecks found
 * and fixed_, 15). Files of a MiB or more (pages a page server wrote) are freed off the event
 * loop, as everything is without `inline`.
 */
export async function removeScratch(
  hostId: string,
  migrationId: string,
  fallbackDir: string,
  options: { inline?: boolean } = {},
): Promise<void> {
  for (const root of ROOTS) {
    const dir = join(root, 'drover', hostId, migrationId);
    if (options.inline) removeSmallFilesInline(dir);
    await rm(dir, { recursive: true, force: true });
    // The host's and Drover's directories go too once empty (a concurrent migration keeps them).
    for (const p of [join(root, 'drover', hostId), join(root, 'drover')]) {
      await rmdir(p).catch(() => undefined);
    }
  }
  await rm(join(fallbackDir, 'scratch', migrationId), { recursive: true, force: true });
}

/** Below this, a scratch file is unlinked on the calling thread (`removeScratch`'s `inline`). */
const INLINE_UNLINK_BYTES = 1024 * 1024;

/**
 * Unlink the small regular files of `dir` and of its subdirectories, and the directories left
 * empty, synchronously (tmpfs: no device to wait for). Large files and anything unreadable are
 * left for the asynchronous `rm` that follows.
 */
function removeSmallFilesInline(dir: string): void {
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  let left = false;
  for (const e of entries) {
    const path = join(dir, e.name);
    try {
      if (e.isDirectory()) {
        removeSmallFilesInline(path);
        rmdirSync(path);
      } else if (!e.isFile() || lstatSync(path).size < INLINE_UNLINK_BYTES) {
        unlinkSync(path);
      } else {
        left = true;
      }
    } catch {
      left = true; // the rm that follows deals with it (or reports it)
    }
  }
  if (!left) {
    try {
      rmdirSync(dir);
    } catch {
      // the rm that follows
    }
  }
}

/**
 * PIDs of CRIU processes still working in one of a migration's scratch directories (their
 * working directory is there: CRIU works in its images directory). An agent that restarted
 * during a dump finds the dump still running: it must end before the job is touched.
 */
export async function criuWorkingIn(
  hostId: string,
  migrationId: string,
  fallbackDir: string,
): Promise<number[]> {
  const dirs = [
    ...ROOTS.map((root) => join(root, 'drover', hostId, migrationId)),
    join(fallbackDir, 'scratch', migrationId),
  ];
  const out: number[] = [];
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const [exe, cwd] = await Promise.all([
      readlink(`/proc/${entry}/exe`).catch(() => ''),
      readlink(`/proc/${entry}/cwd`).catch(() => ''),
    ]);
    if (exe.endsWith('/criu') && dirs.some((d) => cwd === d || cwd.startsWith(`${d}/`)))
      out.push(Number(entry));
  }
  return out;
}
