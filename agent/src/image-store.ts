/** Checkpoint images on this host: `<stateDir>/images/<imageId>/` with CRIU's files and a manifest. */
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DroverError, ErrorCode, type Logger } from '@drover/common';
import type { ImageFile, ImageInfo } from '@drover/protocol';
import { sortedEntries, type JobRecord } from './job-store.js';
import { scratchRoots } from './migration/scratch.js';

/** What an image directory holds besides CRIU's files. */
export interface ImageManifest extends ImageInfo {
  /** The job as it was at the checkpoint (command, env, limits, paths). */
  job: JobRecord;
  /** Host PIDs of the tree at the checkpoint: an adopted tree's restore needs them free. */
  pids: number[];
  /** CRIU's files are sealed (image-crypto.ts); false only for images of older agents. */
  sealed?: boolean;
  /**
   * Each sealed file's plaintext size and SHA-256, recorded as it was sealed (format 2): an image
   * push sends such a file as it is and records these. Absent in images of older agents.
   */
  files?: ImageFile[];
}

/** Longest a leave-running checkpoint's image waits in tmpfs before it is sealed anyway. */
export const SEAL_DEADLINE_MS = 30_000;

/**
 * Images sealed at once on this host. A cluster checkpoint thaws every job of the cut together;
 * their images sealed all at once would all be ready only at the end (each gets a share of the
 * CPUs), and the first upload would wait for the last seal. Two at a time, in the order their
 * jobs were thawed, the first is ready early and its upload runs while the next ones are sealed.
 */
export const SEALS_AT_ONCE = 2;

/** The manifest's file in an image directory: the one file that is not sealed. */
export const MANIFEST_FILE = 'manifest.json';

/** Reads and writes image directories. */
export class ImageStore {
  readonly imagesDir: string;

  constructor(stateDir: string) {
    this.imagesDir = join(stateDir, 'images');
  }

  dir(imageId: string): string {
    return join(this.imagesDir, imageId);
  }

  /** Create an empty image directory; refuses an id that exists. */
  async create(imageId: string): Promise<string> {
    await mkdir(this.imagesDir, { recursive: true, mode: 0o700 });
    const dir = this.dir(imageId);
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (err) {
      throw new DroverError(ErrorCode.AlreadyExists, `image ${imageId} already exists`, {
        cause: err,
        details: { imageId },
      });
    }
    return dir;
  }

  async writeManifest(m: ImageManifest): Promise<void> {
    const tmp = join(this.dir(m.imageId), `.${MANIFEST_FILE}.tmp`);
    await writeFile(tmp, JSON.stringify(m, null, 2), { mode: 0o600 });
    await rename(tmp, join(this.dir(m.imageId), MANIFEST_FILE));
  }

  /**
   * Images whose files are still to be sealed after a leave-running checkpoint returned: listed
   * at once, read only once sealed. Sealing waits until the job runs again (a cluster's cut holds
   * its jobs frozen: sealing then would only slow the other dumps) or someone reads the image.
   */
  private readonly sealing = new Map<
    string,
    { info: ImageInfo; start: (urgent?: boolean) => Promise<void>; timer: NodeJS.Timeout }
  >();

  /** Seals waiting for their turn (SEALS_AT_ONCE). */
  private readonly turns = new Turns(SEALS_AT_ONCE);

  /**
   * Finish image `info` later with `work` (seal, write the manifest): when `startNow`, when its
   * job is thawed (`startFinishing`), when it is read, or after `SEAL_DEADLINE_MS` at the latest;
   * SEALS_AT_ONCE at a time, in that order, a read going first. Reads of it wait for `work`, and
   * fail with its error if it fails (the image is then gone).
   */
  finishLater(info: ImageInfo, work: () => Promise<void>, startNow: boolean): void {
    let turn: { done: Promise<void>; hurry: () => void } | null = null;
    const start = (urgent = false): Promise<void> => {
      if (turn) {
        if (urgent) turn.hurry();
        return turn.done;
      }
      clearTimeout(entry.timer);
      turn = this.turns.take(work, urgent);
      void turn.done.finally(() => this.sealing.delete(info.imageId)).catch(() => undefined);
      return turn.done;
    };
    const entry = {
      info,
      start,
      timer: setTimeout(() => void start().catch(() => undefined), SEAL_DEADLINE_MS),
    };
    entry.timer.unref();
    this.sealing.set(info.imageId, entry);
    if (startNow) void start().catch(() => undefined);
  }

  /** Start finishing every image of job `jobId` that waits (the job runs again). */
  startFinishing(jobId: string): void {
    for (const e of this.sealing.values()) {
      if (e.info.jobId === jobId) void e.start().catch(() => undefined);
    }
  }

  /** Finish image `imageId` now if it waits, and wait for it; its error if that failed. */
  async finished(imageId: string): Promise<void> {
    await this.sealing.get(imageId)?.start(true);
  }

  async readManifest(imageId: string): Promise<ImageManifest> {
    await this.finished(imageId);
    try {
      return JSON.parse(
        await readFile(join(this.dir(imageId), MANIFEST_FILE), 'utf8'),
      ) as ImageManifest;
    } catch (err) {
      throw new DroverError(ErrorCode.NotFound, `no image ${imageId} on this host`, {
        cause: err,
        details: { imageId },
      });
    }
  }

  /** Every complete image (directories without a manifest are unfinished and skipped). */
  /** One image as `list` shows it (sealing or finished), or null (none, or unfinished). */
  async info(id: string): Promise<ImageInfo | null> {
    const sealing = this.sealing.get(id);
    if (sealing) return sealing.info;
    try {
      return toImageInfo(await this.readManifest(id));
    } catch {
      return null;
    }
  }

  async list(): Promise<ImageInfo[]> {
    const out: ImageInfo[] = [];
    for (const id of await sortedEntries(this.imagesDir)) {
      const sealing = this.sealing.get(id);
      if (sealing) {
        out.push(sealing.info);
        continue;
      }
      try {
        out.push(toImageInfo(await this.readManifest(id)));
      } catch {
        // unfinished
      }
    }
    return out;
  }

  /**
   * At start: remove every image directory without a manifest (unfinished) and this host's
   * checkpoint and restore scratch in tmpfs (`image-*`, `restore-*`): nothing is using them yet.
   */
  async sweepUnfinished(hostId: string, stateDir: string, log: Logger): Promise<void> {
    for (const id of await readdir(this.imagesDir).catch(() => [] as string[])) {
      if (id.startsWith('.')) continue;
      const hasManifest = await stat(join(this.dir(id), MANIFEST_FILE)).then(
        () => true,
        () => false,
      );
      if (!hasManifest) {
        log.warn('removing an unfinished image', { imageId: id });
        await rm(this.dir(id), { recursive: true, force: true });
      }
    }
    for (const root of scratchRoots(hostId, stateDir)) {
      for (const name of await readdir(root).catch(() => [] as string[])) {
        if (name.startsWith('image-') || name.startsWith('restore-')) {
          log.warn('removing checkpoint scratch left by an earlier run', { dir: join(root, name) });
          await rm(join(root, name), { recursive: true, force: true });
        }
      }
    }
  }

  async remove(imageId: string): Promise<boolean> {
    await this.finished(imageId).catch(() => undefined);
    try {
      await stat(this.dir(imageId));
    } catch {
      return false;
    }
    await rm(this.dir(imageId), { recursive: true, force: true });
    return true;
  }

  /** Total size of the files in directory `dir` (CRIU's plaintext files: an image's size). */
  async sizeOf(dir: string): Promise<number> {
    let total = 0;
    for (const f of await readdir(dir)) {
      try {
        total += (await stat(join(dir, f))).size;
      } catch {
        // raced
      }
    }
    return total;
  }
}

/** Public view of a manifest. */
export function toImageInfo(m: ImageManifest): ImageInfo {
  return {
    imageId: m.imageId,
    jobId: m.jobId,
    host: m.host,
    dir: m.dir,
    createdAt: m.createdAt,
    leaveRunning: m.leaveRunning,
    sizeBytes: m.sizeBytes,
    frozenMs: m.frozenMs,
    dumpMs: m.dumpMs,
  };
}

/** Work run at most `most` at a time, in the order it was taken; `urgent` work goes first. */
export class Turns {
  #line: (() => void)[] = [];
  #active = 0;

  constructor(private readonly most: number) {}

  /** Run `work` in its turn: its outcome, and `hurry` to put it first in line if it waits. */
  take(work: () => Promise<void>, urgent = false): { done: Promise<void>; hurry: () => void } {
    let go!: () => void;
    const done = new Promise<void>((resolve, reject) => {
      go = () => {
        this.#active++;
        work()
          .then(resolve, reject)
          .finally(() => {
            this.#active--;
            this.#pump();
          });
      };
    });
    if (urgent) this.#line.unshift(go);
    else this.#line.push(go);
    this.#pump();
    const hurry = (): void => {
      const i = this.#line.indexOf(go);
      if (i > 0) this.#line.unshift(...this.#line.splice(i, 1));
    };
    return { done, hurry };
  }

  #pump(): void {
    while (this.#active < this.most && this.#line.length > 0) this.#line.shift()!();
  }
}
