/**
 * The checkpointing guard (linux-cr's CHECKPOINTING freezer state): while a checkpoint holds a job
 * frozen, thawing it is refused — in this process through a registry, across processes and agent
 * restarts through a marker file `<stateDir>/checkpointing`.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import { cgroupFsError, errnoOf } from './errors.js';

/** Name of the marker file inside a job's state directory. */
export const CHECKPOINT_MARKER = 'checkpointing';

/** Who holds a checkpointing guard (the marker file's content). */
export interface GuardHolder {
  readonly jobId: string;
  /** Unique per acquisition: only the same token releases it. */
  readonly token: string;
  /** PID of the process that took the guard. */
  readonly pid: number;
  /** ISO time the guard was taken. */
  readonly since: string;
}

/** Guards held by this process, keyed by the frozen cgroup directory (shared by all instances). */
const heldInProcess = new Map<string, GuardHolder>();

/** Reads, takes and clears the guard of one job; `key` is the job's freezer directory. */
export class GuardStore {
  readonly #jobId: string;
  readonly #key: string;
  readonly #marker: string | null;
  readonly #stateDir: string | null;

  constructor(jobId: string, key: string, stateDir: string | null) {
    this.#jobId = jobId;
    this.#key = key;
    this.#stateDir = stateDir;
    this.#marker = stateDir === null ? null : join(stateDir, CHECKPOINT_MARKER);
  }

  /** The current holder (this process's registry first, then the marker file), or null. */
  async read(): Promise<GuardHolder | null> {
    const local = heldInProcess.get(this.#key);
    if (local !== undefined) return local;
    if (this.#marker === null) return null;
    let text: string;
    try {
      text = await readFile(this.#marker, 'utf8');
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return null;
      throw cgroupFsError(err, 'read', this.#marker);
    }
    return parseHolder(text, this.#jobId);
  }

  /**
   * Take the guard or throw CgroupBusy. The registry check-and-set has no await in between, so it
   * is atomic within the process; the marker is created with O_EXCL, so it is atomic across them.
   */
  async acquire(): Promise<GuardHolder> {
    const current = heldInProcess.get(this.#key);
    if (current !== undefined) throw busy(this.#jobId, current);
    const holder: GuardHolder = {
      jobId: this.#jobId,
      token: randomUUID(),
      pid: process.pid,
      since: new Date().toISOString(),
    };
    heldInProcess.set(this.#key, holder);
    if (this.#marker === null || this.#stateDir === null) return holder;
    try {
      await mkdir(this.#stateDir, { recursive: true });
      await writeFile(this.#marker, JSON.stringify(holder) + '\n', { flag: 'wx' });
      return holder;
    } catch (err) {
      heldInProcess.delete(this.#key);
      if (errnoOf(err) === 'EEXIST') {
        const other = await this.read().catch(() => null);
        throw busy(this.#jobId, other, err);
      }
      throw cgroupFsError(err, 'write', this.#marker);
    }
  }

  /**
   * Drop the guard if `token` still holds it (any holder when `token` is null: recovery only).
   * Returns whether anything was removed.
   */
  async clear(token: string | null): Promise<boolean> {
    let removed = false;
    const local = heldInProcess.get(this.#key);
    if (local !== undefined && (token === null || local.token === token)) {
      heldInProcess.delete(this.#key);
      removed = true;
    }
    if (this.#marker === null) return removed;
    if (token !== null) {
      // Never delete a marker that a later acquisition (after a forced clear) wrote.
      const onDisk = await this.read();
      if (onDisk === null || onDisk.token !== token) return removed;
    }
    try {
      await unlink(this.#marker);
      return true;
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return removed;
      throw cgroupFsError(err, 'unlink', this.#marker);
    }
  }
}

/**
 * A held checkpointing guard: the job stays frozen and `thaw()` is refused until `release`.
 * Obtained from `JobCgroup.freezeForCheckpoint()`.
 */
export class CheckpointGuard {
  readonly holder: GuardHolder;
  #released = false;
  readonly #onRelease: (holder: GuardHolder, thaw: boolean) => Promise<void>;

  /** @internal Created by JobCgroup. */
  constructor(
    holder: GuardHolder,
    onRelease: (holder: GuardHolder, thaw: boolean) => Promise<void>,
  ) {
    this.holder = holder;
    this.#onRelease = onRelease;
  }

  /** The job this guard holds. */
  get jobId(): string {
    return this.holder.jobId;
  }

  /** True once `release` was called. */
  get released(): boolean {
    return this.#released;
  }

  /**
   * Release the guard; with `thaw: true` also thaw the job (thaw first, then drop the marker, so
   * nobody sees an unguarded frozen-but-about-to-thaw job). A second call does nothing.
   */
  async release(options: { thaw: boolean }): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    await this.#onRelease(this.holder, options.thaw);
  }
}

function parseHolder(text: string, jobId: string): GuardHolder {
  // A marker we cannot parse (e.g. a crash mid-write) still counts as held: fail safe.
  try {
    const v = JSON.parse(text) as Partial<GuardHolder>;
    return {
      jobId: typeof v.jobId === 'string' ? v.jobId : jobId,
      token: typeof v.token === 'string' ? v.token : 'unknown',
      pid: typeof v.pid === 'number' ? v.pid : 0,
      since: typeof v.since === 'string' ? v.since : '',
    };
  } catch {
    return { jobId, token: 'unknown', pid: 0, since: '' };
  }
}

function busy(jobId: string, holder: GuardHolder | null, cause?: unknown): DroverError {
  return new DroverError(ErrorCode.CgroupBusy, `job ${jobId} is already held for a checkpoint`, {
    cause,
    details: { jobId, holder },
  });
}
