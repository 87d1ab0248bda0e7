/** Persisted job records and their directories under `<stateDir>/jobs/<id>/`. */
import { lstat, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import { isSameLiveProcess } from '@drover/native';
import { ID_PATTERN, JobKind, JobState, type JobInfo } from '@drover/protocol';
import { readNoFollow, touchNoFollow, writeAtomicNoFollow } from './job-dir-fs.js';

/** What the agent keeps about a job: the public JobInfo plus what re-attaching needs. */
export interface JobRecord extends JobInfo {
  /** `/proc/<rootPid>/stat` start time (clock ticks): tells a reused PID from the job's root. */
  rootStartTicks: number | null;
  /**
   * The main process's start time on this host (clock ticks): with `mainPid`, its identity in
   * this incarnation; across restores it is known by `mainPidInside` (job-main.ts).
   */
  mainStartTicks?: number | null;
  /** Environment the job was started with (restores and migrations keep it). */
  env: Record<string, string>;
  /** Whether CRIU needs `--shell-job` (adopted trees whose session is outside). */
  shellJob: boolean;
  /** Hostname inside the job's UTS namespace (namespaced jobs). */
  hostname: string | null;
}

/** States in which a job's processes exist on this host. */
export const LIVE_STATES: readonly JobState[] = [
  JobState.starting,
  JobState.running,
  JobState.frozen,
  JobState.checkpointing,
  JobState.migrating,
];

/** File names inside a job's directory. */
export const JobFiles = {
  record: 'record.json',
  stdout: 'stdout.log',
  stderr: 'stderr.log',
  exitStatus: 'exit-status',
  /** The PID (inside the job) the wrapper took from a `--main-pidfile`: the job's main now. */
  mainPid: 'main-pid',
  /** A job run with a terminal (`run -t`): the FIFO its terminal reads its input from. */
  ttyIn: 'tty-in',
} as const;

/** Largest job record read (records are a few KiB). */
const MAX_RECORD_BYTES = 4 * 1024 * 1024;

/**
 * Reads and writes job records; every write is atomic (temp file + rename). A job can write to
 * its own directory: no file there is ever read or written through a symlink (job-dir-fs.ts).
 */
export class JobStore {
  readonly jobsDir: string;

  constructor(stateDir: string) {
    this.jobsDir = join(stateDir, 'jobs');
  }

  /** The directory of job `id` (stdout/stderr, exit status, self-checkpoint socket). */
  jobDir(id: string): string {
    // Ids are checked by every schema; this keeps any other caller from leaving jobs/ too.
    if (!ID_PATTERN.test(id)) {
      throw new DroverError(ErrorCode.InvalidArgument, `invalid job id ${JSON.stringify(id)}`, {
        details: { jobId: id.slice(0, 100) },
      });
    }
    return join(this.jobsDir, id);
  }

  async init(): Promise<void> {
    await mkdir(this.jobsDir, { recursive: true, mode: 0o700 });
  }

  /** Create the job's directory with its log files. */
  async createJobDir(id: string): Promise<string> {
    const dir = await this.ensureDir(id);
    for (const f of [JobFiles.stdout, JobFiles.stderr]) await touchNoFollow(join(dir, f));
    return dir;
  }

  async save(record: JobRecord): Promise<void> {
    const dir = await this.ensureDir(record.id);
    await writeAtomicNoFollow(join(dir, JobFiles.record), JSON.stringify(record, null, 2));
  }

  /** The job's directory, created if missing; refused if it is anything but a directory. */
  private async ensureDir(id: string): Promise<string> {
    const dir = this.jobDir(id);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    if (!(await lstat(dir)).isDirectory()) {
      throw new DroverError(ErrorCode.FailedPrecondition, `${dir} is not a directory`, {
        details: { jobId: id },
      });
    }
    return dir;
  }

  async load(id: string): Promise<JobRecord> {
    try {
      return JSON.parse(await this.readRecord(id)) as JobRecord;
    } catch (err) {
      throw new DroverError(ErrorCode.NotFound, `no job ${id} on this host`, {
        cause: err,
        details: { jobId: id },
      });
    }
  }

  /** A job whose processes exist here, checked by PID and start time. */
  async loadLive(jobId: string): Promise<JobRecord> {
    const r = await this.load(jobId);
    if (
      !LIVE_STATES.includes(r.state) ||
      r.rootPid === null ||
      !isSameLiveProcess(r.rootPid, r.rootStartTicks)
    ) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `job ${jobId} is not running (state ${r.state})`,
        {
          details: { jobId, state: r.state },
        },
      );
    }
    return r;
  }

  /** Every record on disk (unreadable ones are skipped and reported through `onBad`). */
  async list(onBad: (id: string, err: unknown) => void = () => {}): Promise<JobRecord[]> {
    const out: JobRecord[] = [];
    for (const id of await sortedEntries(this.jobsDir)) {
      try {
        out.push(JSON.parse(await this.readRecord(id)) as JobRecord);
      } catch (err) {
        onBad(id, err);
      }
    }
    return out;
  }

  /** The exit status the job's wrapper wrote, if it did. */
  async exitStatus(id: string): Promise<number | null> {
    try {
      const { data } = await readNoFollow(join(this.jobDir(id), JobFiles.exitStatus), {
        maxBytes: 64,
      });
      const n = Number.parseInt(data.toString('utf8').trim(), 10);
      return Number.isInteger(n) ? n : null;
    } catch {
      return null;
    }
  }

  private async readRecord(id: string): Promise<string> {
    const path = join(this.jobDir(id), JobFiles.record);
    return (await readNoFollow(path, { maxBytes: MAX_RECORD_BYTES })).data.toString('utf8');
  }

  async remove(id: string): Promise<void> {
    await rm(this.jobDir(id), { recursive: true, force: true });
  }
}

/** The names in `dir`, sorted; none when it does not exist (yet). */
export async function sortedEntries(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).sort();
}

/** A record with every field at its "nothing yet" value, for job `id` of host `host`. */
export function blankRecord(id: string, host: string, jobDir: string): JobRecord {
  return {
    id,
    name: id,
    host,
    kind: JobKind.namespaced,
    state: JobState.starting,
    command: [],
    cwd: '/',
    rootPid: null,
    mainPid: null,
    mainPidInside: null,
    mainStartTicks: null,
    startedAt: new Date().toISOString(),
    exitedAt: null,
    exitCode: null,
    signal: null,
    memoryLimitBytes: null,
    jobDir,
    stdoutPath: join(jobDir, JobFiles.stdout),
    stderrPath: join(jobDir, JobFiles.stderr),
    restoredFrom: null,
    note: null,
    rootStartTicks: null,
    env: {},
    shellJob: false,
    hostname: null,
    network: { mode: 'host' },
    checkpointOptions: {},
    until: 'main',
    mainPidfile: null,
    tty: false,
  };
}

/** Public view of a record. */
export function toJobInfo(r: JobRecord): JobInfo {
  return {
    id: r.id,
    name: r.name,
    host: r.host,
    kind: r.kind,
    state: r.state,
    command: r.command,
    cwd: r.cwd,
    rootPid: r.rootPid,
    mainPid: r.mainPid,
    mainPidInside: r.mainPidInside,
    startedAt: r.startedAt,
    exitedAt: r.exitedAt,
    exitCode: r.exitCode,
    signal: r.signal,
    memoryLimitBytes: r.memoryLimitBytes,
    jobDir: r.jobDir,
    stdoutPath: r.stdoutPath,
    stderrPath: r.stderrPath,
    restoredFrom: r.restoredFrom,
    note: r.note,
    // Records written before jobs had their own addresses were all on the host's network.
    network: r.network ?? { mode: 'host' },
    // Records written before these existed: Drover's defaults, the command as the main process.
    checkpointOptions: r.checkpointOptions ?? {},
    until: r.until ?? 'main',
    mainPidfile: r.mainPidfile ?? null,
    tty: r.tty ?? false,
  };
}
