/**
 * Images in and out of the image-set object store: `pushImage` stores a local image, sealed with
 * the set's key (image-crypto.ts), under `<set>/<job>/` — its sealed files as they are, renamed;
 * the small ones together in one object, the image's pack (image-pack.ts), each large one as an
 * object of its own — `fetchImage` brings one back onto this host, authenticating every chunk and
 * checking every byte against the checksums the set recorded (sets stored before packs: every
 * file an object of its own). A pair, like CRIU's dump_x/restore_x. `moveImage` stores an image
 * and drops the local copy; a cluster checkpoint's image, not sealed yet, goes from CRIU's
 * plaintext straight into the store. `decodeStoredImage` reads one in memory to show what is in it.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { ObjectFiles } from '@drover/bus';
import {
  backoff,
  DroverError,
  ErrorCode,
  runGroups,
  retry,
  settleAll,
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
  Rebind,
  rebindImage,
  SEAL_AT_ONCE_BYTES,
  SEAL_CHUNK_BYTES,
  sealImage,
} from './image-crypto.js';
import { isPacked, packObject, packStream, unpack, type SealedFile } from './image-pack.js';
import { MANIFEST_FILE, toImageInfo, type ImageManifest, type TakenImage } from './image-store.js';

/**
 * Files of one image uploaded at once. Each upload holds at most a few MiB (its read buffer of
 * 1 MiB and ObjectFiles' chunks in flight, 4 + 1 of 1 MiB; an older image's file, sealed again,
 * the seal pipeline's 4 chunks of 1 MiB as well: about 6–10 MiB), so a push holds at most about
 * 4 × 10 MiB, and only while several large files go up together.
 */
const FILE_UPLOADS = 4;

/**
 * Small files of one image read and sealed at once for its pack, while the pack goes up. An image
 * of a process tree is dozens of files of a few KiB (`core-*`, `mm-*`, `fdinfo-*`...): as objects
 * of their own their upload was round trips and records, not bytes, and most of a push
 * (docs/CHECKPOINT.md, "The store"); in the pack they are a few chunks of one object.
 */
const SMALL_FILE_READS = 16;

/** A file this size or smaller (its plaintext) is small: it goes into its image's pack. */
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
  const recorded = recordedFile(manifest, name);
  if (recorded) {
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
  return putPlaintext(
    store,
    object,
    plaintextOf(manifest, name, key, bytesPerSec),
    key,
    bytesPerSec,
  );
}

/** Plaintext `plain` sealed as `object` into the store; its size and SHA-256, taken as it passes. */
async function putPlaintext(
  store: ObjectFiles,
  object: string,
  plain: AsyncIterable<Uint8Array>,
  key: Buffer,
  bytesPerSec: number | undefined,
): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  const count = { bytes: 0 };
  await store.put(object, sealImage(hashedChunks(plain, hash, bytesPerSec, count), key, object));
  return { size: count.bytes, sha256: hash.digest('hex') };
}

/** Plaintext `plain` of file `name` sealed whole as `object` (for a pack), its size and SHA-256. */
async function sealPlaintext(
  name: string,
  object: string,
  plain: AsyncIterable<Uint8Array>,
  key: Buffer,
): Promise<SealedFile> {
  const hash = createHash('sha256');
  const count = { bytes: 0 };
  const parts: Uint8Array[] = [];
  for await (const c of sealImage(hashedChunks(plain, hash, undefined, count), key, object)) {
    parts.push(c);
  }
  return { name, sealed: Buffer.concat(parts), size: count.bytes, sha256: hash.digest('hex') };
}

/** File `name` of a local image if it is sealed in format 2 with recorded checksums. */
function recordedFile(manifest: ImageManifest, name: string): ImageFile | undefined {
  if (manifest.sealed !== true || name === MANIFEST_FILE) return undefined;
  return manifest.files?.find((f) => f.name === name);
}

/**
 * A small file of a local image sealed for its pack as object `object` (the name it would have
 * alone): a file sealed with recorded checksums gets a new header and keeps its chunks, as
 * `putImageFile` moves it; any other is opened, hashed and sealed.
 */
async function sealSmallFile(
  manifest: ImageManifest,
  name: string,
  object: string,
  key: Buffer,
): Promise<SealedFile> {
  const recorded = recordedFile(manifest, name);
  if (recorded) {
    const from = localImageName(manifest.imageId, name);
    const r = new Rebind(key, from, object, { inPlace: true, plainBytes: recorded.size });
    // A file sealed in one go (a few KiB, most of an image's) is read in one go as well: its
    // system calls without a trip to libuv's threads for each (image-crypto.ts, SEAL_AT_ONCE_BYTES).
    const path = join(manifest.dir, name);
    const out = r.push(
      recorded.size <= SEAL_AT_ONCE_BYTES ? readFileSync(path) : await readFile(path),
    );
    r.end();
    const sealed = out.length === 1 ? out[0]! : Buffer.concat(out);
    return { name, sealed, size: recorded.size, sha256: recorded.sha256 };
  }
  return sealPlaintext(name, object, plaintextOf(manifest, name, key, undefined), key);
}

/**
 * The files of one image as a push reads them: a local image's sealed files (`localFiles`), or
 * the plaintext CRIU wrote of an image not sealed yet (`unsealedFiles`, a move).
 */
interface PushFiles {
  /** The files to store, by name, in order. */
  readonly names: readonly string[];
  /** File `name`'s plaintext size (its size on the disk where the image did not record it). */
  size(name: string): number;
  /** Small file `name` sealed whole for the pack as object `object`. */
  sealSmall(name: string, object: string): Promise<SealedFile>;
  /** Large file `name` into the store as object `object`: its plaintext's size and SHA-256. */
  put(
    store: ObjectFiles,
    name: string,
    object: string,
    bytesPerSec: number | undefined,
  ): Promise<{ size: number; sha256: string }>;
}

/** Local image `manifest`'s files (its manifest among them), read from this host's disk. */
async function localFiles(manifest: ImageManifest, key: Buffer): Promise<PushFiles> {
  const names = (await readdir(manifest.dir)).filter((f) => !f.startsWith('.')).sort();
  // A file whose size the image did not record (the manifest, an older image's) is as large as
  // it is on the disk: sealed it is no smaller.
  const sizes = new Map((manifest.files ?? []).map((f) => [f.name, f.size]));
  for (const name of names) {
    if (!sizes.has(name)) sizes.set(name, (await stat(join(manifest.dir, name))).size);
  }
  return {
    names,
    size: (name) => sizes.get(name)!,
    sealSmall: (name, object) => sealSmallFile(manifest, name, object, key),
    put: (store, name, object, bytesPerSec) =>
      putImageFile(store, manifest, name, object, key, bytesPerSec),
  };
}

/**
 * The files of image `taken`, not sealed yet: CRIU's plaintext in tmpfs, each read once, hashed
 * and sealed on its way into the store, and the manifest as its seal would have written it.
 */
async function unsealedFiles(taken: TakenImage, key: Buffer): Promise<PushFiles> {
  const manifest = Buffer.from(JSON.stringify(taken.manifest, null, 2));
  const dumped = (await readdir(taken.plainDir)).sort();
  const sizes = new Map<string, number>([[MANIFEST_FILE, manifest.length]]);
  for (const name of dumped) sizes.set(name, (await stat(join(taken.plainDir, name))).size);
  const path = (name: string): string => join(taken.plainDir, name);
  return {
    names: [...sizes.keys()].sort(),
    size: (name) => sizes.get(name)!,
    // A small file (a few KiB, most of an image's) is read in one go: no trip to libuv's threads.
    sealSmall: (name, object) =>
      sealPlaintext(
        name,
        object,
        once(name === MANIFEST_FILE ? manifest : readFileSync(path(name))),
        key,
      ),
    // A large one is read in the seal's record size: each read is sealed as it is.
    put: (store, name, object, bytesPerSec) =>
      putPlaintext(
        store,
        object,
        createReadStream(path(name), {
          highWaterMark: pieceBytes(bytesPerSec, SEAL_CHUNK_BYTES),
        }) as AsyncIterable<Uint8Array>,
        key,
        bytesPerSec,
      ),
  };
}

/**
 * The small files `names` of an image into the store as its pack (image-pack.ts); what the set
 * records of each, in the names' order.
 */
async function putPack(
  store: ObjectFiles,
  files: PushFiles,
  names: readonly string[],
  prefix: string,
  bytesPerSec: number | undefined,
): Promise<ImageFile[]> {
  const pack = packStream(names.length, SMALL_FILE_READS, (i) =>
    files.sealSmall(names[i]!, `${prefix}/${names[i]!}`),
  );
  await store.put(packObject(prefix), hashedChunks(pack.data, null, bytesPerSec, { bytes: 0 }));
  return pack.files;
}

type PushReply = AgentReplies['image-push'];
type PushFaults = { throttleBytesPerSec?: number; failPushAfterFiles?: number };

/**
 * One push (and one move) per image at a time: a repeated request (a controller that took over)
 * joins it.
 */
const pushing = new Map<string, Promise<PushReply>>();

/**
 * Moves that ended lately, by image and prefix: the image is gone from this host, and a repeated
 * request (a controller that took over before it recorded the reply) gets the reply again.
 */
const moved = new Map<string, { reply: PushReply; at: number }>();
const MOVED_KEPT_MS = 10 * 60_000;
const MOVED_KEPT = 4096;

/** Copy local image `imageId` into the object store under `prefix/` (idempotent). */
export function pushImage(
  agent: Agent,
  objects: () => Promise<ObjectFiles>,
  req: AgentRequest<'image-push'>,
  faults: PushFaults = {},
): Promise<PushReply> {
  const key = `push ${req.imageId} ${req.prefix}`;
  return joinOrRun(key, () => storeLocal(agent, objects, req, faults));
}

/** Local image `req.imageId` into the store from this host's disk, once it is sealed. */
async function storeLocal(
  agent: Agent,
  objects: () => Promise<ObjectFiles>,
  req: AgentRequest<'image-push'>,
  faults: PushFaults,
): Promise<PushReply> {
  const t0 = performance.now();
  const manifest = await agent.images.readManifest(req.imageId); // complete images only
  const tReady = performance.now();
  const files = await localFiles(manifest, imageKey(req.key));
  return storeFiles(agent, objects, req, files, faults, { t0, readyMs: tReady - t0 });
}

/**
 * Move local image `imageId` into the object store under `prefix/`: stored as `image-push`
 * stores it, then gone from this host (idempotent). An image still waiting for its seal (a
 * cluster checkpoint's) is sealed straight from CRIU's plaintext into the store, each file read
 * once: it never reaches this host's disk, and the seal it waited for is not made.
 */
export function moveImage(
  agent: Agent,
  objects: () => Promise<ObjectFiles>,
  req: AgentRequest<'image-move'>,
  faults: PushFaults = {},
): Promise<PushReply> {
  const key = `move ${req.imageId} ${req.prefix}`;
  const done = moved.get(key);
  if (done) return Promise.resolve(done.reply);
  return joinOrRun(key, async () => {
    const taken = agent.images.takeUnsealed(req.imageId);
    let reply: PushReply;
    if (taken) {
      const t0 = performance.now();
      try {
        const files = await unsealedFiles(taken, imageKey(req.key));
        reply = await storeFiles(agent, objects, req, files, faults, { t0, readyMs: 0 });
      } catch (err) {
        taken.giveBack();
        throw err;
      }
      // Stored: what is left here is tmpfs scratch (an agent's restart sweeps what stays).
      await taken
        .stored()
        .catch((err: unknown) =>
          agent.log.warn("cannot remove a moved image's plaintext", { imageId: req.imageId, err }),
        );
    } else {
      reply = await storeLocal(agent, objects, req, faults);
      await agent.images.remove(req.imageId);
    }
    remember(key, reply);
    return reply;
  });
}

/** The push of `key` running now, or `run` started as it. */
function joinOrRun(key: string, run: () => Promise<PushReply>): Promise<PushReply> {
  const running = pushing.get(key);
  if (running) return running;
  const p = run();
  pushing.set(key, p);
  void p.finally(() => pushing.delete(key)).catch(() => undefined);
  return p;
}

/** Keep a move's reply for its repeats (MOVED_KEPT_MS, MOVED_KEPT of them at most). */
function remember(key: string, reply: PushReply): void {
  const now = Date.now();
  for (const [k, v] of moved) {
    if (now - v.at < MOVED_KEPT_MS && moved.size < MOVED_KEPT) break;
    moved.delete(k);
  }
  moved.set(key, { reply, at: now });
}

/**
 * An image's `files` into the store under `req.prefix`: large files a few at once (FILE_UPLOADS),
 * each an object of its own; the small ones alongside, all in one object, the pack. Each upload
 * cut off for a transient reason is made again. Results keep the names' order.
 */
async function storeFiles(
  agent: Agent,
  objects: () => Promise<ObjectFiles>,
  req: AgentRequest<'image-push'>,
  files: PushFiles,
  faults: PushFaults,
  timing: { t0: number; readyMs: number },
): Promise<PushReply> {
  const { names } = files;
  const isSmall = (name: string): boolean => files.size(name) <= SMALL_FILE_BYTES;
  const injectFault = (index: number, name: string): void => {
    if (index === faults.failPushAfterFiles) {
      throw new DroverError(ErrorCode.Internal, `injected fault: image push failed at ${name}`);
    }
  };
  // An upload cut off (a NATS server restarting, say) is made again from the image's files;
  // the bucket is opened again too if it could not be (objects() keeps it once open).
  const retried = <T>(object: string, put: (store: ObjectFiles) => Promise<T>): Promise<T> =>
    retry(async () => put(await objects()), {
      forMs: PUT_RETRY_MS,
      pauseMs: PUT_PAUSE,
      retryIf: (err) => toDroverError(err).retryable,
      onRetry: (err, n) =>
        agent.log.warn('image upload interrupted; uploading the object again', {
          object,
          attempt: n,
          err: toDroverError(err),
        }),
    }).catch((err: unknown) => {
      throw toDroverError(err);
    });
  const indexed = names.map((name, index) => ({ name, index }));
  const small = indexed.filter((x) => isSmall(x.name));
  const large = indexed.filter((x) => !isSmall(x.name));
  const pack = { name: packObject(req.prefix), index: -1 };
  const stored = new Array<ImageFile>(names.length);
  await runGroups(
    [large, small.length > 0 ? [pack] : []],
    (group) => (group === large ? FILE_UPLOADS : 1),
    async (x) => {
      if (x === pack) {
        for (const s of small) injectFault(s.index, s.name);
        const smallNames = small.map((s) => s.name);
        const packed = await retried(pack.name, (store) =>
          putPack(store, files, smallNames, req.prefix, faults.throttleBytesPerSec),
        );
        packed.forEach((f, k) => (stored[small[k]!.index] = f));
        return;
      }
      injectFault(x.index, x.name);
      const object = `${req.prefix}/${x.name}`;
      const sent = await retried(object, (store) =>
        files.put(store, x.name, object, faults.throttleBytesPerSec),
      );
      stored[x.index] = { name: x.name, ...sent };
    },
  );
  const sizeBytes = stored.reduce((a, f) => a + f.size, 0);
  const ms = Math.round(performance.now() - timing.t0);
  agent.log.info('image stored', {
    imageId: req.imageId,
    prefix: req.prefix,
    sizeBytes,
    // How long the push waited for the image's seal, and took in all.
    readyMs: Math.round(timing.readyMs),
    ms,
  });
  return { files: stored, sizeBytes, durationMs: ms };
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

/** One piece as a stream. */
async function* once(piece: Uint8Array): AsyncGenerator<Uint8Array> {
  yield piece;
}

/**
 * Stored file `f` (object `object`: its own, or its name within the pack), its sealed bytes
 * `data` starting with `head`, written to `path` as file `local` of this host's image; throws
 * DATA_LOSS unless it authenticates and matches its recorded size and SHA-256.
 */
async function landFile(
  f: ImageFile,
  object: string,
  head: Uint8Array,
  data: AsyncIterable<Uint8Array>,
  path: string,
  local: string,
  key: Buffer,
): Promise<void> {
  const hash = createHash('sha256');
  const count = { bytes: 0 };
  const hashed = (input: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> =>
    hashedChunks(input, hash, undefined, count);
  if (f.name !== MANIFEST_FILE && isMovable(head)) {
    // Format 2: written as it is under this image's local name, then opened from the disk —
    // every chunk of the copy that a restore will read authenticated and hashed — instead
    // of opened and sealed again.
    await pipeline(rebindImage(data, key, object, local), createWriteStream(path, { mode: 0o600 }));
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
      `image file ${object} does not match its checksum (size ${size}, expected ${f.size})`,
      { details: { name: f.name, size, expected: f.size, sha256, expectedSha256: f.sha256 } },
    );
  }
}

/**
 * Copy an image from the object store into this host's images as `imageId`, verifying each file's
 * size and SHA-256 before anything is visible: files land in a hidden directory that is renamed
 * into place only when all of them check out. Replaces a local copy of the same id. The pack's
 * files (read in one stream) and the files stored alone land at the same time.
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
  const land = (f: ImageFile, head: Uint8Array, data: AsyncIterable<Uint8Array>): Promise<void> =>
    landFile(
      f,
      `${req.prefix}/${f.name}`,
      head,
      data,
      join(tmp, f.name),
      localImageName(req.imageId, f.name),
      key,
    );
  const packed = req.files.filter(isPacked);
  const alone = req.files.filter((f) => !isPacked(f));
  try {
    await settleAll([
      (async () => {
        if (packed.length === 0) return;
        const object = packObject(req.prefix);
        for await (const { file, sealed } of unpack(store.get(object), packed, object)) {
          await land(file, sealed, once(sealed));
        }
      })(),
      (async () => {
        for (const f of alone) {
          const { head, data } = await firstPiece(store.get(`${req.prefix}/${f.name}`));
          await land(f, head, data);
        }
      })(),
    ]);
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
  // Every file now on this host is sealed in format 2 with the checksums just verified (where
  // it was in the store is no business of the local image).
  manifest.files = req.files
    .filter((f) => f.name !== MANIFEST_FILE)
    .map(({ name, size, sha256 }) => ({ name, size, sha256 }));
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
  // The pack is read once, when a file in it is first read: its files' sealed bytes by name.
  let pack: Promise<Map<string, Buffer>> | null = null;
  const packed = (): Promise<Map<string, Buffer>> =>
    (pack ??= (async () => {
      const object = packObject(req.prefix);
      const files = new Map<string, Buffer>();
      for await (const { file, sealed } of unpack(
        store.get(object),
        req.files.filter(isPacked),
        object,
      )) {
        files.set(file.name, sealed);
      }
      return files;
    })());
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
    const sealed = isPacked(f) ? once((await packed()).get(name)!) : store.get(object);
    for await (const chunk of openImage(sealed, key, object)) {
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
