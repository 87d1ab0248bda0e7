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
 * Images sealed at once on this host: two, so that an image read while others are sealed (an
 * upload waiting for it) does not wait for all of them.
 */
export const SEALS_AT_ONCE = 2;

/** The manifest's file in an image directory: the one file that is not sealed. */
export const MANIFEST_FILE = 'manifest.json';

/**
 * A leave-running checkpoint's image whose files are not sealed yet: its manifest as it will be
 * written (without `files`) and CRIU's plaintext files in tmpfs scratch.
 */
export interface UnsealedImage {
  readonly manifest: ImageManifest;
  /** CRIU's files, plaintext (tmpfs scratch). */
  readonly plainDir: string;
  /** Remove the plaintext and the image's directory (it holds nothing yet). */
  discard(): Promise<void>;
}

/** An unsealed image a move holds (ImageStore.takeUnsealed). */
export interface TakenImage {
  readonly manifest: ImageManifest;
  readonly plainDir: string;
  /** Its files are in the store: the image goes, its plaintext with it. */
  stored(): Promise<void>;
  /** The move failed: the image waits for its seal again (read, or its deadline). */
  giveBack(): void;
}

/** An image waiting for its seal. */
interface Waiting {
  readonly info: ImageInfo;
  readonly work: () => Promise<void>;
  /** Its seal's turn, once taken. */
  turn: { done: Promise<void>; hurry: () => void } | null;
  /** While a move holds it (takeUnsealed): settles when the move ends. */
  held: Promise<void> | null;
  readonly unsealed: UnsealedImage | null;
  timer: NodeJS.Timeout;
}

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
   * at once, read only once sealed. Sealing waits until the job is thawed by itself
   * (`startFinishing`), someone reads the image or a move takes it (a cluster checkpoint's images
   * go to the set: `takeUnsealed`), `SEAL_DEADLINE_MS` at the latest; it never runs while a cut
   * holds jobs frozen (it would only slow the other dumps).
   */
  private readonly sealing = new Map<string, Waiting>();

  /** Seals waiting for their turn (SEALS_AT_ONCE). */
  private readonly turns = new Turns(SEALS_AT_ONCE);

  /**
   * Finish image `info` later with `work` (seal, write the manifest): now when `startNow`, else
   * when its job is thawed by itself, when it is read or after `SEAL_DEADLINE_MS`; SEALS_AT_ONCE
   * at a time, in that order, a read going first. Reads of it wait for `work`, and fail with its
   * error if it fails (the image is then gone). An image given with its `unsealed` files may be
   * taken by a move instead until its seal starts (`takeUnsealed`).
   */
  finishLater(
    info: ImageInfo,
    work: () => Promise<void>,
    startNow: boolean,
    unsealed: UnsealedImage | null = null,
  ): void {
    const entry: Waiting = {
      info,
      work,
      turn: null,
      held: null,
      unsealed,
      timer: this.deadline(info.imageId),
    };
    this.sealing.set(info.imageId, entry);
    if (startNow) void this.start(entry).catch(() => undefined);
  }

  /** Seal `entry` in its turn (first in line when `urgent`); after the move holding it, if any. */
  private start(entry: Waiting, urgent = false): Promise<void> {
    if (entry.held) {
      // A move holds it: it ends in the store (the image is gone) or is given back.
      return entry.held.then(() => {
        const e = this.sealing.get(entry.info.imageId);
        return e ? this.start(e, urgent) : undefined;
      });
    }
    if (entry.turn) {
      if (urgent) entry.turn.hurry();
      return entry.turn.done;
    }
    clearTimeout(entry.timer);
    const turn = this.turns.take(entry.work, urgent);
    entry.turn = turn;
    void turn.done.finally(() => this.sealing.delete(entry.info.imageId)).catch(() => undefined);
    return turn.done;
  }

  /** The deadline of image `imageId`'s wait: sealed then whoever else wants it. */
  private deadline(imageId: string): NodeJS.Timeout {
    const timer = setTimeout(() => {
      const e = this.sealing.get(imageId);
      if (e) void this.start(e).catch(() => undefined);
    }, SEAL_DEADLINE_MS);
    timer.unref();
    return timer;
  }

  /**
   * Take image `imageId` to seal its files somewhere else (into the image-set store) if it still
   * waits for its seal, or null (sealed or being sealed, or none). Reads wait for the taker: after
   * `stored()` the image is gone (its plaintext too); after `giveBack()` it waits again as before.
   */
  takeUnsealed(imageId: string): TakenImage | null {
    const e = this.sealing.get(imageId);
    if (!e?.unsealed || e.turn || e.held) return null;
    const unsealed = e.unsealed;
    clearTimeout(e.timer);
    let release!: () => void;
    e.held = new Promise<void>((resolve) => (release = resolve));
    return {
      manifest: unsealed.manifest,
      plainDir: unsealed.plainDir,
      stored: async () => {
        this.sealing.delete(imageId);
        try {
          await unsealed.discard();
        } finally {
          release();
        }
      },
      giveBack: () => {
        e.held = null;
        e.timer = this.deadline(imageId);
        release();
      },
    };
  }

  /**
   * Start sealing every image of job `jobId` that waits (the job runs again after a `thaw`). A
   * cluster cut's thaw (`thaw-many`) does not: its images wait for their moves.
   */
  startFinishing(jobId: string): void {
    for (const e of this.sealing.values()) {
      if (e.info.jobId === jobId && !e.held) void this.start(e).catch(() => undefined);
    }
  }

  /** Finish image `imageId` now if it waits, and wait for it; its error if that failed. */
  async finished(imageId: string): Promise<void> {
    const e = this.sealing.get(imageId);
    if (e) await this.start(e, true);
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
    const e = this.sealing.get(imageId);
    if (e?.unsealed && !e.turn && !e.held) {
      // Still waiting for its seal: its plaintext goes, and the seal is never made.
      clearTimeout(e.timer);
      this.sealing.delete(imageId);
      await e.unsealed.discard();
      return true;
    }
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
