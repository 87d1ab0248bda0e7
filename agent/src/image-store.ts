/** Checkpoint images on this host: `<stateDir>/images/<imageId>/` with CRIU's files and a manifest. */
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import type { ImageInfo } from '@drover/protocol';
import type { JobRecord } from './job-store.js';

/** What an image directory holds besides CRIU's files. */
export interface ImageManifest extends ImageInfo {
  /** The job as it was at the checkpoint (command, env, limits, paths). */
  job: JobRecord;
  /** Host PIDs of the tree at the checkpoint: an adopted tree's restore needs them free. */
  pids: number[];
  /** CRIU's files are sealed (image-crypto.ts); false only for images of older agents. */
  sealed?: boolean;
}

/** The manifest's file in an image directory: the one file that is not sealed. */
export const MANIFEST_FILE = 'manifest.json';
const MANIFEST = MANIFEST_FILE;

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
    const tmp = join(this.dir(m.imageId), `.${MANIFEST}.tmp`);
    await writeFile(tmp, JSON.stringify(m, null, 2), { mode: 0o600 });
    await rename(tmp, join(this.dir(m.imageId), MANIFEST));
  }

  async readManifest(imageId: string): Promise<ImageManifest> {
    try {
      return JSON.parse(await readFile(join(this.dir(imageId), MANIFEST), 'utf8')) as ImageManifest;
    } catch (err) {
      throw new DroverError(ErrorCode.NotFound, `no image ${imageId} on this host`, {
        cause: err,
        details: { imageId },
      });
    }
  }

  /** Every complete image (directories without a manifest are unfinished and skipped). */
  async list(): Promise<ImageInfo[]> {
    let ids: string[];
    try {
      ids = await readdir(this.imagesDir);
    } catch {
      return [];
    }
    const out: ImageInfo[] = [];
    for (const id of ids.sort()) {
      try {
        out.push(toImageInfo(await this.readManifest(id)));
      } catch {
        // unfinished
      }
    }
    return out;
  }

  async remove(imageId: string): Promise<boolean> {
    try {
      await stat(this.dir(imageId));
    } catch {
      return false;
    }
    await rm(this.dir(imageId), { recursive: true, force: true });
    return true;
  }

  /** Total size of the files in an image directory. */
  async sizeOf(imageId: string): Promise<number> {
    let total = 0;
    for (const f of await readdir(this.dir(imageId))) {
      try {
        total += (await stat(join(this.dir(imageId), f))).size;
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
