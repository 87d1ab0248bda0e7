/**
 * What Drover adds to a job's CRIU images so that the job comes back whole on any host: its job
 * directory (every file the job keeps there, logs included) as one archive, and the external
 * mounts and link its restore binds on the restoring host. `planJobDump` and `checkpointJobFiles`
 * run on the dumping host; `restoreJobFiles` is their counterpart on the restoring one.
 */
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CHECKPOINT_MARKER } from '@drover/cgroup';
import { DroverError, ErrorCode } from '@drover/common';
import { JobKind } from '@drover/protocol';
import { addressOf, restoreLinkExternals } from './job-network.js';
import {
  dumpMountExternals,
  readHostMounts,
  restoreMountExternals,
  type ExternalMount,
} from './job-mounts.js';
import { JobFiles, type JobRecord } from './job-store.js';
import { SELF_CHECKPOINT_SOCKET } from './self-checkpoint.js';

const exec = promisify(execFile);

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

/** What the restoring host needs besides CRIU's images. */
interface RestoreInfo {
  version: 1;
  /** Mounts bound from the restoring host (`source` is recomputed there). */
  mounts: { key: string; mountpoint: string }[];
}

/** How a job is dumped: CRIU options that depend on what the job is attached to. */
export interface JobDumpPlan {
  mounts: ExternalMount[];
  externals: string[];
  /** Established connections move (the job's own network namespace travels with it). */
  tcpEstablished: boolean;
  shellJob: boolean;
}

/** How a job is restored here: CRIU options bound to this host. */
export interface JobRestorePlan {
  externals: string[];
  tcpEstablished: boolean;
  shellJob: boolean;
}

/** Read the live job's mounts and decide the dump's options (before anything is frozen is fine). */
export async function planJobDump(job: JobRecord): Promise<JobDumpPlan> {
  if (job.kind !== JobKind.namespaced || job.rootPid === null) {
    return { mounts: [], externals: [], tcpEstablished: false, shellJob: job.shellJob };
  }
  const mounts = await readHostMounts(job.rootPid);
  if (addressOf(job.network)) {
    mounts.push({ key: HOSTS_FILE_KEY, mountpoint: '/etc/hosts', source: hostsFileOf(job) });
  }
  return {
    mounts,
    // mnt[] stays for mounts that are not the host's (CRIU resolves those itself).
    externals: [...dumpMountExternals(mounts), 'mnt[]'],
    tcpEstablished: addressOf(job.network) !== null,
    shellJob: job.shellJob,
  };
}

/** The job's own /etc/hosts, in its job directory. */
export function hostsFileOf(job: Pick<JobRecord, 'jobDir'>): string {
  return join(job.jobDir, 'hosts');
}

/**
 * After CRIU dumped the (still frozen) job into `imagesDir`: archive its job directory there and
 * record the restore's mounts. Returns the archive's size.
 */
export async function checkpointJobFiles(
  job: JobRecord,
  plan: JobDumpPlan,
  imagesDir: string,
): Promise<number> {
  const archive = join(imagesDir, JobImageFiles.jobDir);
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
  const info: RestoreInfo = {
    version: 1,
    mounts: plan.mounts.map((m) => ({ key: m.key, mountpoint: m.mountpoint })),
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
  if (job.kind !== JobKind.namespaced)
    return { externals: [], tcpEstablished: false, shellJob: job.shellJob };
  const info = await readRestoreInfo(imagesDir);
  const mounts: ExternalMount[] = (info?.mounts ?? []).map((m) => ({
    ...m,
    source: m.key === HOSTS_FILE_KEY ? hostsFileOf(job) : m.mountpoint,
  }));
  const net = addressOf(job.network);
  return {
    externals: [
      ...restoreMountExternals(mounts),
      'mnt[]',
      ...(net ? restoreLinkExternals(job.id, jobBridge) : []),
    ],
    tcpEstablished: net !== null,
    shellJob: job.shellJob,
  };
}

/** Run tar on a job's directory; a failure names the job and what tar said. */
async function tar(job: JobRecord, what: 'archive' | 'unpack', args: string[]): Promise<void> {
  try {
    await exec('tar', args, { timeout: 10 * 60_000, maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    const said = (err as { stderr?: string }).stderr?.trim() || String(err);
    throw new DroverError(ErrorCode.Internal, `cannot ${what} job ${job.id}'s directory: ${said}`, {
      cause: err,
      details: { jobId: job.id, jobDir: job.jobDir },
    });
  }
}

async function readRestoreInfo(imagesDir: string): Promise<RestoreInfo | null> {
  try {
    const info = JSON.parse(
      await readFile(join(imagesDir, JobImageFiles.restore), 'utf8'),
    ) as RestoreInfo;
    return info.version === 1 && Array.isArray(info.mounts) ? info : null;
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

/** Bytes in a job directory (what its archive will carry, roughly), for preflight and progress. */
export async function jobDirBytes(jobDir: string): Promise<number> {
  try {
    const { stdout } = await exec('du', ['-sb', jobDir], { timeout: 60_000 });
    return Number(stdout.split(/\s+/)[0]) || 0;
  } catch {
    return 0;
  }
}
