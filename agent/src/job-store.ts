/** Persisted job records and their directories under `<stateDir>/jobs/<id>/`. */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import type { JobInfo } from '@drover/protocol';

/** What the agent keeps about a job: the public JobInfo plus what re-attaching needs. */
export interface JobRecord extends JobInfo {
  /** `/proc/<rootPid>/stat` start time (clock ticks): tells a reused PID from the job's root. */
  rootStartTicks: number | null;
  /** Environment the job was started with (restores and migrations keep it). */
  env: Record<string, string>;
  /** Whether CRIU needs `--shell-job` (adopted trees whose session is outside). */
  shellJob: boolean;
  /** Hostname inside the job's UTS namespace (namespaced jobs). */
  hostname: string | null;
}

/** File names inside a job's directory. */
export const JobFiles = {
  record: 'record.json',
  stdout: 'stdout.log',
  stderr: 'stderr.log',
  exitStatus: 'exit-status',
} as const;

/** Reads and writes job records; every write is atomic (temp file + rename). */
export class JobStore {
  readonly jobsDir: string;

  constructor(stateDir: string) {
    this.jobsDir = join(stateDir, 'jobs');
  }

  /** The directory of job `id` (stdout/stderr, exit status, self-checkpoint socket). */
  jobDir(id: string): string {
    return join(this.jobsDir, id);
  }

  async init(): Promise<void> {
    await mkdir(this.jobsDir, { recursive: true, mode: 0o700 });
  }

  /** Create the job's directory with its log files. */
  async createJobDir(id: string): Promise<string> {
    const dir = this.jobDir(id);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    for (const f of [JobFiles.stdout, JobFiles.stderr]) {
      await writeFile(join(dir, f), '', { flag: 'a', mode: 0o600 });
    }
    return dir;
  }

  async save(record: JobRecord): Promise<void> {
    const dir = this.jobDir(record.id);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, `.${JobFiles.record}.${process.pid}.tmp`);
    await writeFile(tmp, JSON.stringify(record, null, 2), { mode: 0o600 });
    await rename(tmp, join(dir, JobFiles.record));
  }

  async load(id: string): Promise<JobRecord> {
    try {
      return JSON.parse(
        await readFile(join(this.jobDir(id), JobFiles.record), 'utf8'),
      ) as JobRecord;
    } catch (err) {
      throw new DroverError(ErrorCode.NotFound, `no job ${id} on this host`, {
        cause: err,
        details: { jobId: id },
      });
    }
  }

  /** Every record on disk (unreadable ones are skipped and reported through `onBad`). */
  async list(onBad: (id: string, err: unknown) => void = () => {}): Promise<JobRecord[]> {
    let ids: string[];
    try {
      ids = await readdir(this.jobsDir);
    } catch {
      return [];
    }
    const out: JobRecord[] = [];
    for (const id of ids.sort()) {
      try {
        out.push(
          JSON.parse(await readFile(join(this.jobDir(id), JobFiles.record), 'utf8')) as JobRecord,
        );
      } catch (err) {
        onBad(id, err);
      }
    }
    return out;
  }

  /** The exit status the job's wrapper wrote, if it did. */
  async exitStatus(id: string): Promise<number | null> {
    try {
      const text = await readFile(join(this.jobDir(id), JobFiles.exitStatus), 'utf8');
      const n = Number.parseInt(text.trim(), 10);
      return Number.isInteger(n) ? n : null;
    } catch {
      return null;
    }
  }

  async remove(id: string): Promise<void> {
    await rm(this.jobDir(id), { recursive: true, force: true });
  }
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
  };
}
