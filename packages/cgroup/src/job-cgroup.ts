/** A job's cgroup across hierarchies: create/open, membership, memory, freezer, guard and destroy. */
import { rmdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DroverError, ErrorCode, nullLogger, toDroverError } from '@drover/common';
import type { Logger } from '@drover/common';
import { CheckpointGuard, GuardStore } from './checkpoint-guard.js';
import type { GuardHolder } from './checkpoint-guard.js';
import {
  exists,
  makeDir,
  pollUntil,
  readProcsTree,
  removeDir,
  serialized,
  serializedAll,
  walkCgroups,
  writeText,
} from './cgroup-fs.js';
import { CheckpointingError, cgroupFsError, errnoOf } from './errors.js';
import {
  freezeCgroup,
  freezeCgroups,
  freezeCgroupsAt,
  readFreezerState,
  thawCgroup,
  type ScheduledFreeze,
} from './freezer.js';
import type { FreezerState, FreezerWait } from './freezer.js';
import { detectCgroupLayout } from './hierarchy.js';
import type { CgroupLayout, CgroupVersion } from './hierarchy.js';
import { DEFAULT_PARENT, jobCgroupPaths } from './job-paths.js';
import type { JobCgroupPaths } from './job-paths.js';
import { enableV2Memory, readMemoryLimit, readMemoryUsage, writeMemoryLimit } from './memory.js';

/** Options to open a job's cgroup. */
export interface JobCgroupOptions {
  /** The job id: 1-128 of `[A-Za-z0-9._-]`, starting alphanumeric. */
  readonly jobId: string;
  /** Parent cgroup, relative to each hierarchy's mount (default `drover`); `/` nests. */
  readonly parent?: string;
  /** Host layout; detected with `detectCgroupLayout()` when omitted. */
  readonly layout?: CgroupLayout;
  /**
   * This job's state directory (one per job). Holds the `checkpointing` marker so the guard
   * survives agent restarts and is seen by other processes; without it the guard is in-process only.
   */
  readonly stateDir?: string;
  readonly logger?: Logger;
  /** How long freeze/thaw wait for the kernel (default 10 s). */
  readonly freezeTimeoutMs?: number;
  /** How often state files are polled (default 10 ms). */
  readonly pollIntervalMs?: number;
}

/** Options to create (or reuse) a job's cgroup. */
export interface CreateJobCgroupOptions extends JobCgroupOptions {
  /** Memory limit to set right away. */
  readonly memoryLimitBytes?: number;
}

/** Options of {@link JobCgroup.destroy}. */
export interface DestroyOptions {
  /** How long to wait for killed processes and busy directories (default 5 s). */
  readonly killTimeoutMs?: number;
  /** Destroy even while a checkpointing guard is held, clearing it (rollback and recovery). */
  readonly force?: boolean;
}

interface Compiled {
  readonly jobId: string;
  readonly layout: CgroupLayout;
  readonly paths: JobCgroupPaths;
  readonly stateDir: string | null;
  readonly wait: FreezerWait;
  readonly log: Logger;
}

function compile(o: JobCgroupOptions): Compiled {
  const layout = o.layout ?? detectCgroupLayout();
  const paths = jobCgroupPaths(layout, o.parent ?? DEFAULT_PARENT, o.jobId);
  const log = (o.logger ?? nullLogger).child({ component: 'cgroup', jobId: o.jobId });
  const wait = { timeoutMs: o.freezeTimeoutMs ?? 10_000, intervalMs: o.pollIntervalMs ?? 10 };
  return { jobId: o.jobId, layout, paths, stateDir: o.stateDir ?? null, wait, log };
}

/**
 * One job's cgroup: `<v2>/<parent>/<jobId>`, plus v1 freezer and/or memory directories when the
 * host needs them (see {@link JobCgroupPaths}).
 */
export class JobCgroup {
  readonly #c: Compiled;
  readonly #guard: GuardStore;

  private constructor(c: Compiled) {
    this.#c = c;
    this.#guard = new GuardStore(c.jobId, c.paths.freezer ?? c.paths.all[0] ?? c.jobId, c.stateDir);
  }

  /**
   * Create the job's directories (existing ones are reused), enable v2 memory control if that is
   * where limits live, and set `memoryLimitBytes` if given. Directories this call created are
   * removed again if it fails.
   */
  static async create(options: CreateJobCgroupOptions): Promise<JobCgroup> {
    const c = compile(options);
    if (options.memoryLimitBytes !== undefined) checkBytes(options.memoryLimitBytes);
    if (options.memoryLimitBytes !== undefined && c.paths.memory === null) {
      throw new DroverError(ErrorCode.Cgroup, 'no memory controller on this host', {
        details: { layout: { ...c.layout } },
      });
    }
    const created: string[] = [];
    try {
      for (const dir of c.paths.all) {
        await makeDir(dirname(dir), true);
        if (dir === c.paths.v2 && c.layout.memory === 'v2' && c.layout.v2 !== null) {
          await enableV2Memory(c.layout.v2, dirname(dir));
        }
        if (await makeDir(dir, false)) created.push(dir);
      }
      if (c.paths.freezer !== null && c.paths.freezer === c.paths.v2) {
        // The layout guessed v2 can freeze; the job's own directory is the proof.
        await stat(join(c.paths.freezer, 'cgroup.freeze')).catch((err: unknown) => {
          throw cgroupFsError(err, 'stat', join(c.paths.freezer ?? '', 'cgroup.freeze'));
        });
      }
      const cg = new JobCgroup(c);
      if (options.memoryLimitBytes !== undefined) await cg.setMemoryLimit(options.memoryLimitBytes);
      c.log.debug('job cgroup ready', { paths: c.paths.all, created });
      return cg;
    } catch (err) {
      const first = toDroverError(err, ErrorCode.Cgroup);
      for (const dir of created.reverse())
        await rmdir(dir).catch((e: unknown) => first.suppress(e));
      throw first;
    }
  }

  /** Open the existing cgroup of a job; NotFound if any of its directories is missing. */
  static async open(options: JobCgroupOptions): Promise<JobCgroup> {
    const c = compile(options);
    const missing: string[] = [];
    for (const dir of c.paths.all) {
      const s = await stat(dir).catch(() => null);
      if (s === null || !s.isDirectory()) missing.push(dir);
    }
    if (missing.length > 0) {
      throw new DroverError(ErrorCode.NotFound, `no cgroup for job ${c.jobId}`, {
        details: { jobId: c.jobId, missing },
      });
    }
    return new JobCgroup(c);
  }

  get jobId(): string {
    return this.#c.jobId;
  }

  get layout(): CgroupLayout {
    return this.#c.layout;
  }

  /** The job's directories per hierarchy. */
  get paths(): JobCgroupPaths {
    return this.#c.paths;
  }

  /** Move process `pid` (with its future children) into every hierarchy, in `paths.all` order. */
  async addProcess(pid: number): Promise<void> {
    if (!Number.isSafeInteger(pid) || pid <= 0) {
      throw new DroverError(ErrorCode.InvalidArgument, `invalid pid ${pid}`, { details: { pid } });
    }
    for (const dir of this.#c.paths.all) await writeText(join(dir, 'cgroup.procs'), String(pid));
  }

  /** Every PID in the job (primary hierarchy, including nested cgroups). */
  async pids(): Promise<number[]> {
    return readProcsTree(this.#primary());
  }

  /** Set the memory limit in bytes (`null` = unlimited). CGROUP with errno EBUSY if usage is above it. */
  async setMemoryLimit(bytes: number | null): Promise<void> {
    if (bytes !== null) checkBytes(bytes);
    const [dir, version] = this.#memory();
    await writeMemoryLimit(dir, version, bytes);
  }

  /** The memory limit in effect (v1 rounds down to pages), or null when unlimited. */
  async memoryLimit(): Promise<number | null> {
    return readMemoryLimit(...this.#memory());
  }

  /** Bytes of memory currently charged to the job. */
  async memoryUsage(): Promise<number> {
    return readMemoryUsage(...this.#memory());
  }

  /** The kernel's freezer state of the job. */
  async state(): Promise<FreezerState> {
    return readFreezerState(...this.#freezer());
  }

  /** Freeze the job and wait until every task is frozen (Timeout: thawed back, retryable). */
  async freeze(): Promise<void> {
    const [dir, version] = this.#freezer();
    await serialized(dir, () =>
      this.#timed('freeze', () => freezeCgroup(dir, version, this.#c.wait)),
    );
  }

  /**
   * Freeze several jobs as one cut (see `freezeCgroups`): every freeze is requested back to back,
   * then all are waited for together, looking every millisecond (the times are a cut's skew); all
   * or nothing. With `at`, the freezes are requested at that instant of this host's clock by the
   * cut timer's thread (`freezeCgroupsAt`; CUT_MISSED, nothing frozen, if it has passed). Returns
   * when each job was seen frozen (epoch ms), in the order given. Each job's freezer is held
   * meanwhile, as by {@link freeze}.
   */
  static async freezeAll(cgroups: readonly JobCgroup[], at?: ScheduledFreeze): Promise<number[]> {
    const first = cgroups[0];
    if (first === undefined) return [];
    const targets = cgroups.map((cg) => {
      const [dir, version] = cg.#freezer();
      return { dir, version };
    });
    const wait = { ...first.#c.wait, intervalMs: Math.min(1, first.#c.wait.intervalMs) };
    const t0 = performance.now();
    const times = await serializedAll(
      targets.map((t) => t.dir),
      () => (at ? freezeCgroupsAt(targets, at, wait) : freezeCgroups(targets, wait)),
    );
    first.#c.log.debug('freeze', {
      jobs: cgroups.length,
      ms: Math.round(performance.now() - t0),
      ...(at ? { atMs: at.atMs } : {}),
    });
    return times;
  }

  /**
   * Thaw the job and wait until it runs. Refused with {@link CheckpointingError} (code
   * CHECKPOINTING) while a checkpointing guard is held, by this or any instance sharing `stateDir`.
   */
  async thaw(): Promise<void> {
    const [dir, version] = this.#freezer();
    await serialized(dir, async () => {
      await this.#refuseIfGuarded('thaw');
      await this.#timed('thaw', () => thawCgroup(dir, version, this.#c.wait));
    });
  }

  /**
   * Take the checkpointing guard, then freeze. The guard is taken first (why: so no thaw can slip in
   * between the freeze and the guard). CgroupBusy if a guard is already held; if freezing fails the
   * guard is dropped again.
   */
  async freezeForCheckpoint(): Promise<CheckpointGuard> {
    const [dir, version] = this.#freezer();
    return serialized(dir, async () => {
      const holder = await this.#guard.acquire();
      try {
        await this.#timed('freeze', () => freezeCgroup(dir, version, this.#c.wait));
      } catch (err) {
        const first = toDroverError(err);
        await this.#guard.clear(holder.token).catch((e: unknown) => first.suppress(e));
        throw first;
      }
      this.#c.log.info('held for checkpoint', { token: holder.token });
      return new CheckpointGuard(holder, (h, thaw) => this.#release(h, thaw));
    });
  }

  /** Who holds the checkpointing guard (this process or the marker in `stateDir`), or null. */
  async checkpointGuard(): Promise<GuardHolder | null> {
    return this.#guard.read();
  }

  /**
   * Recovery only: drop any checkpointing guard — the in-process one and the marker file — without
   * thawing. For an agent that restarted while a checkpoint held the job and has decided what to do
   * with it. Returns whether a guard was there.
   */
  async forceClearGuard(): Promise<boolean> {
    const cleared = await this.#guard.clear(null);
    if (cleared) this.#c.log.warn('checkpointing guard force-cleared');
    return cleared;
  }

  /**
   * Kill the job and remove its directories. Thaws first if frozen (frozen v1 tasks cannot die),
   * SIGKILLs by PID only the processes listed in the job's cgroups until they are empty, then
   * removes every directory, children first. While a checkpointing guard is held it refuses with
   * CHECKPOINTING unless `force` (which clears the guard). Harmless on an already destroyed job.
   */
  async destroy(options: DestroyOptions = {}): Promise<void> {
    const timeoutMs = options.killTimeoutMs ?? 5_000;
    const { all, freezer } = this.#c.paths;
    await serialized(freezer ?? this.#primary(), async () => {
      // Killing a job mid-checkpoint must be deliberate: release the guard first, or force.
      if (options.force === true) await this.#guard.clear(null);
      else await this.#refuseIfGuarded('destroy');
      // Kill, then thaw, then wait: frozen v1 tasks cannot die and v2 ones would sit
      // killed-but-frozen, so a thaw is needed; but thawing first would let a frozen job run
      // again for a moment (a migrated job's old copy must never run next to the new one). With
      // SIGKILL already pending, a thawed task dies before it executes another instruction.
      if (freezer !== null && (await exists(freezer)) && (await this.state()) !== 'thawed') {
        await this.#signalAll(all);
        await thawCgroup(...this.#freezer(), this.#c.wait);
      }
      await this.#killAll(all, timeoutMs);
      for (const top of all) {
        for (const dir of (await walkCgroups(top)).reverse())
          await removeDir(dir, timeoutMs, this.#c.wait.intervalMs);
      }
      this.#c.log.info('job cgroup destroyed', { paths: all });
    });
  }

  /** One SIGKILL to every member listed now (no waiting). */
  async #signalAll(dirs: readonly string[]): Promise<void> {
    for (const dir of dirs) {
      for (const pid of await readProcsTree(dir)) {
        if (pid === process.pid) continue;
        try {
          process.kill(pid, 'SIGKILL');
        } catch (err) {
          if (errnoOf(err) !== 'ESRCH') throw toDroverError(err, ErrorCode.Cgroup);
        }
      }
    }
  }

  async #killAll(dirs: readonly string[], timeoutMs: number): Promise<void> {
    await pollUntil(
      async () => {
        const pids = new Set<number>();
        for (const dir of dirs) for (const pid of await readProcsTree(dir)) pids.add(pid);
        if (pids.has(process.pid)) {
          throw new DroverError(
            ErrorCode.Cgroup,
            'refusing to kill: the calling process is in the job',
            {
              details: { jobId: this.#c.jobId, pid: process.pid },
            },
          );
        }
        // Only PIDs the kernel just listed as members; re-listed each round, so forks are caught.
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch (err) {
            if (errnoOf(err) !== 'ESRCH') throw toDroverError(err, ErrorCode.Cgroup);
          }
        }
        if (pids.size > 0) this.#c.log.debug('killed job processes', { pids: [...pids] });
        return pids.size === 0;
      },
      {
        timeoutMs,
        intervalMs: this.#c.wait.intervalMs,
        what: 'job processes did not exit',
        path: dirs[0] ?? '',
      },
    );
  }

  async #release(holder: GuardHolder, thaw: boolean): Promise<void> {
    const [dir, version] = this.#freezer();
    await serialized(dir, async () => {
      try {
        const now = await this.#guard.read();
        // A stale guard (force-cleared, then taken again) must not thaw its successor's checkpoint.
        if (thaw && now !== null && now.token !== holder.token) {
          throw new CheckpointingError(
            this.#c.jobId,
            `job ${this.#c.jobId} is held by another checkpoint`,
            {
              ...now,
            },
          );
        }
        // After destroy() there is nothing left to thaw.
        if (thaw && (await exists(dir))) {
          await this.#timed('thaw', () => thawCgroup(dir, version, this.#c.wait));
        }
      } finally {
        await this.#guard.clear(holder.token);
        this.#c.log.info('checkpoint guard released', { token: holder.token, thaw });
      }
    });
  }

  async #refuseIfGuarded(op: string): Promise<void> {
    const holder = await this.#guard.read();
    if (holder !== null) {
      throw new CheckpointingError(
        this.#c.jobId,
        `cannot ${op} job ${this.#c.jobId}: it is frozen for a checkpoint (pid ${holder.pid} since ${holder.since})`,
        { ...holder },
      );
    }
  }

  async #timed(op: string, fn: () => Promise<void>): Promise<void> {
    const t0 = performance.now();
    await fn();
    this.#c.log.debug(op, { ms: Math.round(performance.now() - t0) });
  }

  #primary(): string {
    return this.#c.paths.all[0] ?? '';
  }

  #freezer(): [string, CgroupVersion] {
    const { paths, layout } = this.#c;
    if (paths.freezer === null || layout.freezer === null) {
      throw new DroverError(ErrorCode.Cgroup, 'no cgroup freezer on this host', {
        details: { root: layout.root },
      });
    }
    return [paths.freezer, layout.freezer];
  }

  #memory(): [string, CgroupVersion] {
    const { paths, layout } = this.#c;
    if (paths.memory === null || layout.memory === null) {
      throw new DroverError(ErrorCode.Cgroup, 'no memory controller on this host', {
        details: { root: layout.root },
      });
    }
    return [paths.memory, layout.memory];
  }
}

function checkBytes(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new DroverError(ErrorCode.InvalidArgument, `invalid memory limit ${bytes}`, {
      details: { bytes },
    });
  }
}
