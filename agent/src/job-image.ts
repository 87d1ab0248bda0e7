/**
 * What Drover adds to a job's CRIU images so that the job comes back whole on any host: its job
 * directory (every file the job keeps there, logs included) as one archive, the external mounts
 * and link its restore binds on the restoring host, and the job's checkpoint options as the dump
 * used them (the restore must use the same). `planJobDump` and `checkpointJobFiles` run on the
 * dumping host; `restoreJobFiles` is their counterpart on the restoring one.
 */
import { lstat, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CHECKPOINT_MARKER } from '@drover/cgroup';
import { DroverError, ErrorCode } from '@drover/common';
import type { NetworkLock } from '@drover/criu';
import { processTree, runCommand } from '@drover/native';
import {
  JobKind,
  resolveCheckpointOptions,
  type CheckpointOptions,
  type EffectiveCheckpointOptions,
} from '@drover/protocol';
import { largestGhostBytes, netNamespace } from './proc-scan.js';
import { addressOf, restoreLinkExternals } from './job-network.js';
import {
  dumpMountExternals,
  readHostMounts,
  restoreMountExternals,
  type ExternalMount,
} from './job-mounts.js';
import { JobFiles, type JobRecord } from './job-store.js';
import { archiveDir } from './job-dir-tar.js';
import { SELF_CHECKPOINT_SOCKET } from './self-checkpoint.js';

/** Files Drover writes beside CRIU's in an images directory (CRIU ignores them). */
export const JobImageFiles = {
  /** The job directory as a tar archive. */
  jobDir: 'drover-jobdir.tar',
  /** {@link RestoreInfo}: what the restore binds. */
  restore: 'drover-restore.json',
} as const;

/** The key of a job's own /etc/hosts (a file of its job directory bound over /etc/hosts). */
export const HOSTS_FILE_KEY = 'drover-hosts';

/** Files of a job directory that belong to the agent on one host and never travel. */
const AGENT_FILES = [
  JobFiles.record,
  JobFiles.exitStatus,
  SELF_CHECKPOINT_SOCKET,
  CHECKPOINT_MARKER,
  '.sock-*',
];

/** Whether a top-level name of a job directory is one of {@link AGENT_FILES}. */
function isAgentFile(name: string): boolean {
  return AGENT_FILES.some((f) => (f.endsWith('*') ? name.startsWith(f.slice(0, -1)) : name === f));
}

/** What the restoring host needs besides CRIU's images. */
interface RestoreInfo {
  /** 1: before checkpoint options travelled (the restore then uses what jobs had then). */
  version: 1 | 2;
  /** Mounts bound from the restoring host (`source` is recomputed there). */
  mounts: { key: string; mountpoint: string }[];
  /** The options the dump used (version 2). */
  criu?: EffectiveCheckpointOptions;
}

/**
 * The network lock CRIU takes for a job's dump, which its restore then undoes the same way
 * (CRIU's restore takes the method from the dump's inventory, not from its own options).
 *
 * A tree in a network namespace of its own is locked with nftables inside that namespace: the
 * lock travels in the namespace's ruleset and the restore takes it out again. So is a tree that
 * dumps established TCP connections: each one is put in the lock's set and dropped until the
 * restore. Otherwise the lock guards nothing: in the host's namespace CRIU creates an empty
 * table `inet CRIU-<run id>` (no connection goes in it without `tcpEstablished`), deletes it
 * again at the end of a `leaveRunning` dump, and a restore deletes it once more (where it never
 * existed: `Could not process rule: No such file or directory`, ignored). Each of the three is a
 * libnftables context, ~10–20 ms here, all of them while the job is frozen (docs/MIGRATION.md,
 * _What CRIU's restore costs_; a cluster checkpoint's cut pays the first two for every dump).
 * Such a dump skips the lock.
 */
export function dumpNetworkLock(tree: {
  /** The tree's root is in the dumping agent's own network namespace. */
  inHostNetwork: boolean;
  tcpEstablished: boolean;
}): NetworkLock {
  return tree.inHostNetwork && !tree.tcpEstablished ? 'skip' : 'nftables';
}

/** Whether process `pid` is in this agent's network namespace (the host's); false if gone. */
async function inHostNetwork(pid: number): Promise<boolean> {
  const theirs = await netNamespace(pid);
  return theirs !== null && theirs === (await netNamespace(process.pid));
}

/** How a job is dumped: its CRIU options, some of which depend on what the job is attached to. */
export interface JobDumpPlan {
  mounts: ExternalMount[];
  externals: string[];
  shellJob: boolean;
  /** The job's options over its host's over Drover's defaults, for this dump. */
  criu: EffectiveCheckpointOptions;
  /** CRIU's network lock for the dump (`dumpNetworkLock`). */
  networkLock: NetworkLock;
}

/** How a job is restored here: CRIU options bound to this host and the ones the dump used. */
export interface JobRestorePlan {
  externals: string[];
  shellJob: boolean;
  tcpEstablished: boolean;
  fileLocks: boolean;
  tcpClose: boolean;
  weakSysctls: boolean;
}

/**
 * Read the live job's mounts and unlinked files and decide the dump's options (before anything
 * is frozen is fine). `hostOptions` are this host's defaults (the agent's configuration).
 */
export async function planJobDump(
  job: JobRecord,
  hostOptions: CheckpointOptions = {},
): Promise<JobDumpPlan> {
  const ownNetwork = addressOf(job.network) !== null;
  const pids = job.rootPid === null ? [] : processTree(job.rootPid).map((p) => p.pid);
  const criu = resolveCheckpointOptions(job.checkpointOptions, hostOptions, {
    ownNetwork,
    largestGhostBytes: await largestGhostBytes(pids),
  });
  const networkLock = dumpNetworkLock({
    inHostNetwork: job.rootPid !== null && (await inHostNetwork(job.rootPid)),
    tcpEstablished: criu.tcpEstablished,
  });
  if (job.kind !== JobKind.namespaced || job.rootPid === null) {
    return { mounts: [], externals: [], shellJob: job.shellJob, criu, networkLock };
  }
  const mounts = await readHostMounts(job.rootPid);
  if (ownNetwork) {
    mounts.push({ key: HOSTS_FILE_KEY, mountpoint: '/etc/hosts', source: hostsFileOf(job) });
  }
  return {
    mounts,
    // mnt[] stays for mounts that are not the host's (CRIU resolves those itself).
    externals: [...dumpMountExternals(mounts), 'mnt[]'],
    shellJob: job.shellJob,
    criu,
    networkLock,
  };
}

/** The job's own /etc/hosts, in its job directory. */
export function hostsFileOf(job: Pick<JobRecord, 'jobDir'>): string {
  return join(job.jobDir, 'hosts');
}

/**
 * Once CRIU has written the (still frozen) job's images into `imagesDir`: archive its job
 * directory there and record the restore's mounts and options. Returns the archive's size.
 * Call it from the dump's `post-dump` notification (see {@link dumpHooksOf}): CRIU removes the
 * link-remap files it made in the job's directories when the dump returns, and the archive
 * must carry them.
 */
export async function checkpointJobFiles(
  job: JobRecord,
  plan: JobDumpPlan,
  imagesDir: string,
): Promise<number> {
  const archive = join(imagesDir, JobImageFiles.jobDir);
  // In-process (job-dir-tar.ts); `tar` itself for what only it archives (a FIFO, a device).
  const done = await archiveDir(job.jobDir, archive, isAgentFile).catch((err: unknown) => {
    throw new DroverError(ErrorCode.Internal, `cannot archive job ${job.id}'s directory: ${err}`, {
      cause: err,
      details: { jobId: job.id, jobDir: job.jobDir },
    });
  });
  if (!done) {
    await tar(job, 'archive', [
      '--create',
      '--file',
      archive,
      '--directory',
      job.jobDir,
      '--numeric-owner',
      '--sparse',
      ...AGENT_FILES.map((f) => `--exclude=./${f}`),
      '.',
    ]);
  }
  const info: RestoreInfo = {
    version: 2,
    mounts: plan.mounts.map((m) => ({ key: m.key, mountpoint: m.mountpoint })),
    criu: plan.criu,
  };
  await writeFile(join(imagesDir, JobImageFiles.restore), JSON.stringify(info), { mode: 0o600 });
  return (await stat(archive)).size;
}

/**
 * Before CRIU restores `job` from `imagesDir` on this host: replace the job directory's contents
 * with the archived ones (a directory left here by an earlier visit of the job is stale), and
 * bind the restore to this host — its mounts at the same paths, its job bridge for the job's
 * link. Images made before jobs carried their directory restore as they did then.
 */
export async function restoreJobFiles(
  job: JobRecord,
  imagesDir: string,
  jobBridge: string,
): Promise<JobRestorePlan> {
  const archive = join(imagesDir, JobImageFiles.jobDir);
  const hasArchive = await stat(archive).then(
    () => true,
    () => false,
  );
  if (hasArchive) {
    await emptyDir(job.jobDir);
    await tar(job, 'unpack', [
      '--extract',
      '--file',
      archive,
      '--directory',
      job.jobDir,
      '--numeric-owner',
      '--same-permissions',
    ]);
    await rm(archive, { force: true });
  }
  const info = await readRestoreInfo(imagesDir);
  const net = addressOf(job.network);
  // Restore-side options the dump decided; images from before they travelled: what jobs had then.
  const options = {
    tcpEstablished: info?.criu?.tcpEstablished ?? net !== null,
    fileLocks: info?.criu?.fileLocks ?? false,
    tcpClose: info?.criu?.tcpClose ?? false,
    weakSysctls: info?.criu?.weakSysctls ?? false,
  };
  if (job.kind !== JobKind.namespaced) return { externals: [], shellJob: job.shellJob, ...options };
  const mounts: ExternalMount[] = (info?.mounts ?? []).map((m) => ({
    ...m,
    source: m.key === HOSTS_FILE_KEY ? hostsFileOf(job) : m.mountpoint,
  }));
  return {
    externals: [
      ...restoreMountExternals(mounts),
      'mnt[]',
      ...(net ? restoreLinkExternals(job.id, jobBridge) : []),
    ],
    shellJob: job.shellJob,
    ...options,
  };
}

/**
 * The dump's hooks for `plan`: the job's files go into `imagesDir` at CRIU's `post-dump`, when
 * the images are written and the tree is still frozen (checkpointJobFiles says why then).
 */
export function dumpHooksOf(
  job: JobRecord,
  plan: JobDumpPlan,
  imagesDir: string,
): { 'post-dump': () => Promise<number> } {
  return { 'post-dump': () => checkpointJobFiles(job, plan, imagesDir) };
}

/** Run tar on a job's directory; a failure names the job and what tar said. */
async function tar(job: JobRecord, what: 'archive' | 'unpack', args: string[]): Promise<void> {
  let said: string;
  let cause: unknown;
  try {
    const r = await runCommand('tar', args, { timeoutMs: 10 * 60_000 });
    if (r.code === 0) return;
    said = r.stderr.trim() || (r.timedOut ? 'timed out' : `exit ${r.code ?? r.signal}`);
  } catch (err) {
    said = String(err);
    cause = err;
  }
  throw new DroverError(ErrorCode.Internal, `cannot ${what} job ${job.id}'s directory: ${said}`, {
    ...(cause !== undefined ? { cause } : {}),
    details: { jobId: job.id, jobDir: job.jobDir },
  });
}

async function readRestoreInfo(imagesDir: string): Promise<RestoreInfo | null> {
  try {
    const info = JSON.parse(
      await readFile(join(imagesDir, JobImageFiles.restore), 'utf8'),
    ) as RestoreInfo;
    return (info.version === 1 || info.version === 2) && Array.isArray(info.mounts) ? info : null;
  } catch {
    return null;
  }
}

/** Remove everything inside `dir` (created if missing), keeping the directory itself. */
async function emptyDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (const name of await readdir(dir))
    await rm(join(dir, name), { recursive: true, force: true });
}

/**
 * Bytes in a job directory (what its archive will carry, roughly), for preflight and progress:
 * `du -sb`'s count (apparent sizes, directories included, a file with several links once), read
 * in-process — a `du` child would cost the agent a fork of itself on every migration.
 */
export async function jobDirBytes(jobDir: string): Promise<number> {
  const seen = new Set<string>();
  const sizeOf = async (path: string): Promise<number> => {
    const st = await lstat(path, { bigint: true }).catch(() => null);
    if (st === null) return 0;
    if (st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      if (seen.has(key)) return 0;
      seen.add(key);
    }
    let bytes = Number(st.size);
    if (st.isDirectory()) {
      const names = await readdir(path).catch(() => [] as string[]);
      for (const name of names) bytes += await sizeOf(join(path, name));
    }
    return bytes;
  };
  return sizeOf(jobDir);
}
