/**
 * Images in and out of the image-set object store: `pushImage` stores a local image, sealed with
 * the set's key (image-crypto.ts), under `<set>/<job>/` — its sealed files as they are, renamed —
 * `fetchImage` brings one back onto this host, authenticating every chunk and checking every byte
 * against the checksums the set recorded. A pair, like CRIU's dump_x/restore_x.
 * `decodeStoredImage` reads one in memory to show what is in it.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { ObjectFiles } from '@drover/bus';
import {
  backoff,
  DroverError,
  ErrorCode,
  runGroups,
  retry,
  sleep,
  toDroverError,
} from '@drover/common';
import { decodeCheckpoint, type ImageSource } from '@drover/crit';
import type { AgentReplies, AgentRequest, ImageFile } from '@drover/protocol';
import type { Agent } from './agent.js';
import {
  imageKey,
  localImageName,
  openFile,
  isMovable,
  openImage,
  rebindFile,
  rebindImage,
  sealImage,
} from './image-crypto.js';
import { MANIFEST_FILE, toImageInfo, type ImageManifest } from './image-store.js';

/**
 * Files of one image uploaded at once. Each upload holds at most a few MiB (its read buffer, the
 * seal pipeline's 4 chunks of 1 MiB and ObjectFiles' chunks in flight: about 9 MiB), so a push
 * holds at most about 4 × 9 MiB, and only while several large files go up together.
 */
const FILE_UPLOADS = 4;

/**
 * Small files of one image uploaded at once, besides FILE_UPLOADS' large ones. An image of a
 * process tree is dozens of files of a few KiB (`core-*`, `mm-*`, `fdinfo-*`...), each one chunk
 * and a record: their upload is round trips, not bytes, and few at a time it was most of a push
 * (docs/CHECKPOINT.md, "The store"). Each holds one chunk.
 */
const SMALL_FILE_UPLOADS = 16;

/** A file this size or smaller (its plaintext) is small: one chunk of the store, sealed. */
const SMALL_FILE_BYTES = 256 * 1024;

/**
 * How long one file's upload is made again while it fails for a transient reason (a NATS server
 * restarting, JetStream not yet answering after it): pauses of 0.5 s doubled up to 5 s, and no
 * new try that would start past this bound. A restarted server on a loaded machine can take
 * tens of seconds to answer JetStream again; a count of tries would end sooner on a fast machine
 * than on a busy one.
 */
const PUT_RETRY_MS = 60_000;
const PUT_PAUSE = backoff(500, 5000);

/** Bytes per read of a local file: smaller when paced, so the pace is even. */
function pieceBytes(bytesPerSec: number | undefined, largest: number): number {
  return bytesPerSec ? Math.max(1024, Math.min(largest, bytesPerSec / 10)) : largest;
}

/** A local image file's plaintext: opened with the key when the image is sealed. */
function plaintextOf(
  manifest: ImageManifest,
  name: string,
  key: Buffer,
  bytesPerSec: number | undefined,
): AsyncIterable<Uint8Array> {
  const path = join(manifest.dir, name);
  if (manifest.sealed === true && name !== MANIFEST_FILE) {
    return openFile(path, key, localImageName(manifest.imageId, name));
  }
  const highWaterMark = pieceBytes(bytesPerSec, 256 * 1024);
  return createReadStream(path, { highWaterMark }) as AsyncIterable<Uint8Array>;
}

/**
 * Bytes, hashed as they pass when `hash` is given; paced to `bytesPerSec` when set (fault
 * injection).
 */
async function* hashedChunks(
  source: AsyncIterable<Uint8Array>,
  hash: Hash | null,
  bytesPerSec: number | undefined,
  count: { bytes: number },
): AsyncGenerator<Uint8Array> {
  const t0 = performance.now();
  let sent = 0;
  for await (const chunk of source) {
    hash?.update(chunk);
    sent += chunk.length;
    count.bytes = sent;
    if (bytesPerSec) {
      const due = (sent / bytesPerSec) * 1000 - (performance.now() - t0);
      if (due > 0) await sleep(due);
    }
    yield chunk;
  }
}

/**
 * One file of a local image into the store as `object`; its plaintext's size and SHA-256. A file
 * sealed in format 2 whose checksums the image recorded goes up as it is, under the object's
 * name (image-crypto.ts `rebindFile`: one new header, the chunks untouched, read in the store's
 * chunk size so none is copied on the way); any other (an older image's, the manifest) is
 * opened, hashed and sealed for the store.
 */
async function putImageFile(
  store: ObjectFiles,
  manifest: ImageManifest,
  name: string,
  object: string,
  key: Buffer,
  bytesPerSec: number | undefined,
): Promise<{ size: number; sha256: string }> {
  const count = { bytes: 0 };
  const recorded =
    manifest.sealed === true ? manifest.files?.find((f) => f.name === name) : undefined;
  if (recorded && name !== MANIFEST_FILE) {
    const sealed = rebindFile(
      join(manifest.dir, name),
      key,
      localImageName(manifest.imageId, name),
      object,
      {
        // A small file in one read of about its size (header and record's framing included):
        // a read buffer of a whole chunk for each of dozens of small files is memory churn.
        pieceBytes: pieceBytes(bytesPerSec, Math.min(store.chunkBytes, recorded.size + 4096)),
        plainBytes: recorded.size,
      },
    );
    await store.put(object, hashedChunks(sealed, null, bytesPerSec, count));
    return { size: recorded.size, sha256: recorded.sha256 };
  }
  const hash = createHash('sha256');
  await store.put(
    object,
    sealImage(
      hashedChunks(plaintextOf(manifest, name, key, bytesPerSec), hash, bytesPerSec, count),
      key,
      object,
    ),
  );
  return { size: count.bytes, sha256: hash.digest('hex') };
}

/** One push per image at a time: a repeated request (a controller that took over) joins it. */
const pushing = new Map<string, Promise<AgentReplies['image-push']>>();

/** Copy local image `imageId` into the object store under `prefix/` (idempotent). */
export function pushImage(
  agent: Agent,
  objects: () => Promise<ObjectFiles>,
  req: AgentRequest<'image-push'>,
  faults: { throttleBytesPerSec?: number; failPushAfterFiles?: number } = {},
): Promise<AgentReplies['image-push']> {
  const key = `${req.imageId} ${req.prefix}`;
  const running = pushing.get(key);
  if (running) return running;
  const p = (async () => {
    const t0 = performance.now();
    const manifest = await agent.images.readManifest(req.imageId); // complete images only
    const tReady = performance.now();
    const key = imageKey(req.key);
    const names = (await readdir(manifest.dir)).filter((f) => !f.startsWith('.')).sort();
    // Files go up a few at once: an image is a few large pages files (FILE_UPLOADS at once) and
    // dozens of small ones of two round trips each (SMALL_FILE_UPLOADS at once, alongside).
    // A file whose size the image did not record counts as large. Results keep the names' order.
    const recorded = new Map((manifest.files ?? []).map((f) => [f.name, f.size]));
    const isSmall = (name: string): boolean => (recorded.get(name) ?? Infinity) <= SMALL_FILE_BYTES;
    const upload = async (name: string, index: number): Promise<ImageFile> => {
      if (index === faults.failPushAfterFiles) {
        throw new DroverError(ErrorCode.Internal, `injected fault: image push failed at ${name}`);
      }
      const object = `${req.prefix}/${name}`;
      // An upload cut off (a NATS server restarting, say) is made again from the local file;
      // the bucket is opened again too if it could not be (objects() keeps it once open).
      const sent = await retry(
        async () =>
          putImageFile(await objects(), manifest, name, object, key, faults.throttleBytesPerSec),
        {
          forMs: PUT_RETRY_MS,
          pauseMs: PUT_PAUSE,
          retryIf: (err) => toDroverError(err).retryable,
          onRetry: (err, n) =>
            agent.log.warn('image upload interrupted; uploading the file again', {
              object,
              attempt: n,
              err: toDroverError(err),
            }),
        },
      ).catch((err: unknown) => {
        throw toDroverError(err);
      });
      return { name, ...sent };
    };
    const indexed = names.map((name, index) => ({ name, index }));
    const small = indexed.filter((x) => isSmall(x.name));
    const files = new Array<ImageFile>(names.length);
    await runGroups(
      [indexed.filter((x) => !isSmall(x.name)), small],
      (group) => (group === small ? SMALL_FILE_UPLOADS : FILE_UPLOADS),
      async (x) => {
        files[x.index] = await upload(x.name, x.index);
      },
    );
    const sizeBytes = files.reduce((a, f) => a + f.size, 0);
    agent.log.info('image stored', {
      imageId: req.imageId,
      prefix: req.prefix,
      sizeBytes,
      // How long the push waited for the image's seal, and took in all.
      readyMs: Math.round(tReady - t0),
      ms: Math.round(performance.now() - t0),
    });
    return { files, sizeBytes, durationMs: Math.round(performance.now() - t0) };
  })();
  pushing.set(key, p);
  void p.finally(() => pushing.delete(key)).catch(() => undefined);
  return p;
}

/** A stream's first piece (empty if none), and the whole stream again. */
async function firstPiece(
  input: AsyncIterable<Uint8Array>,
): Promise<{ head: Uint8Array; data: AsyncIterable<Uint8Array> }> {
  const it = input[Symbol.asyncIterator]();
  const first = await it.next();
  const head = first.done === true ? new Uint8Array(0) : first.value;
  async function* data(): AsyncGenerator<Uint8Array> {
    if (first.done === true) return;
    try {
      yield first.value;
      for (let n = await it.next(); n.done !== true; n = await it.next()) yield n.value;
    } finally {
      // Abandoned half-way (a failed write): the store's stream is closed, not left hanging.
      await it.return?.();
    }
  }
  return { head, data: data() };
}

/**
 * Copy an image from the object store into this host's images as `imageId`, verifying each file's
 * size and SHA-256 before anything is visible: files land in a hidden directory that is renamed
 * into place only when all of them check out. Replaces a local copy of the same id.
 */
export async function fetchImage(
  agent: Agent,
  objects: () => Promise<ObjectFiles>,
  req: AgentRequest<'image-fetch'>,
): Promise<AgentReplies['image-fetch']> {
  const t0 = performance.now();
  const key = imageKey(req.key);
  const store = await objects();
  const final = agent.images.dir(req.imageId);
  const tmp = join(agent.images.imagesDir, `.fetch-${req.imageId}`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true, mode: 0o700 });
  try {
    for (const f of req.files) {
      const path = join(tmp, f.name);
      const object = `${req.prefix}/${f.name}`;
      const local = localImageName(req.imageId, f.name);
      const { head, data } = await firstPiece(store.get(object));
      const hash = createHash('sha256');
      const count = { bytes: 0 };
      const hashed = (input: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> =>
        hashedChunks(input, hash, undefined, count);
      if (f.name !== MANIFEST_FILE && isMovable(head)) {
        // Format 2: written as it is under this image's local name, then opened from the disk —
        // every chunk of the copy that a restore will read authenticated and hashed — instead
        // of opened and sealed again.
        await pipeline(
          rebindImage(data, key, object, local),
          createWriteStream(path, { mode: 0o600 }),
        );
        for await (const _ of hashed(openFile(path, key, local, object)));
      } else {
        // An older set's object is sealed again for the disk (the manifest stays readable).
        const plain = hashed(openImage(data, key, object));
        await pipeline(
          f.name === MANIFEST_FILE ? plain : sealImage(plain, key, local),
          createWriteStream(path, { mode: 0o600 }),
        );
      }
      const sha256 = hash.digest('hex');
      const size = count.bytes;
      if (size !== f.size || sha256 !== f.sha256) {
        throw new DroverError(
          ErrorCode.DataLoss,
          `image file ${req.prefix}/${f.name} does not match its checksum (size ${size}, expected ${f.size})`,
          { details: { name: f.name, size, expected: f.size, sha256, expectedSha256: f.sha256 } },
        );
      }
    }
    await rm(final, { recursive: true, force: true });
    await rename(tmp, final);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
  // The manifest came from the checkpointing host: it now describes this copy.
  const manifest = await agent.images.readManifest(req.imageId);
  manifest.imageId = req.imageId;
  manifest.dir = final;
  manifest.host = agent.config.hostId;
  manifest.sealed = true;
  // Every file now on this host is sealed in format 2 with the checksums just verified.
  manifest.files = req.files.filter((f) => f.name !== MANIFEST_FILE);
  await agent.images.writeManifest(manifest);
  agent.log.info('image fetched', { imageId: req.imageId, prefix: req.prefix });
  return { ...toImageInfo(manifest), durationMs: Math.round(performance.now() - t0) };
}

/** The largest image file decoded whole (the process tree's metadata; pages are streamed). */
const MAX_DECODED_FILE_BYTES = 256 * 1024 * 1024;

/**
 * What is inside an image of the image-set store (`images inspect NAME --job J`): its files are
 * read with the set's key and checked against the set's checksums, in memory — the plaintext
 * never reaches a disk — and decoded as CRIU's `crit` would (@drover/crit).
 */
export async function decodeStoredImage(
  objects: () => Promise<ObjectFiles>,
  req: AgentRequest<'image-decode'>,
): Promise<AgentReplies['image-decode']> {
  const key = imageKey(req.key);
  const store = await objects();
  const listed = new Map(req.files.map((f) => [f.name, f]));
  // Every byte of a file passes through here, hashed; `onChunk` sees it with its offset.
  const stream = async (
    name: string,
    onChunk: (chunk: Uint8Array, offset: number) => void,
  ): Promise<void> => {
    const f = listed.get(name);
    if (!f) throw new DroverError(ErrorCode.NotFound, `the image has no file ${name}`);
    const object = `${req.prefix}/${name}`;
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of openImage(store.get(object), key, object)) {
      hash.update(chunk);
      onChunk(chunk, size);
      size += chunk.length;
    }
    const sha256 = hash.digest('hex');
    if (size !== f.size || sha256 !== f.sha256) {
      throw new DroverError(
        ErrorCode.DataLoss,
        `image file ${object} does not match its checksum (size ${size}, expected ${f.size})`,
        { details: { name, size, expected: f.size, sha256, expectedSha256: f.sha256 } },
      );
    }
  };
  const source: ImageSource = {
    files: new Map(req.files.map((f) => [f.name, f.size])),
    async read(name) {
      const size = listed.get(name)?.size ?? 0;
      if (size > MAX_DECODED_FILE_BYTES) {
        throw new DroverError(
          ErrorCode.FailedPrecondition,
          `image file ${name} is too large to decode (${size} bytes)`,
          { details: { name, size } },
        );
      }
      const parts: Uint8Array[] = [];
      await stream(name, (c) => parts.push(c));
      return Buffer.concat(parts);
    },
    async readRanges(name, ranges) {
      const out = ranges.map((r) => Buffer.alloc(r.length));
      await stream(name, (chunk, at) => {
        const end = at + chunk.length;
        ranges.forEach((r, i) => {
          const lo = Math.max(at, r.offset);
          const hi = Math.min(end, r.offset + r.length);
          if (hi > lo) out[i]!.set(chunk.subarray(lo - at, hi - at), lo - r.offset);
        });
      });
      return out;
    },
  };
  return decodeCheckpoint(source);
}
