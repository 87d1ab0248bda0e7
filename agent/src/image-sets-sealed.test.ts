/**
 * Image push and fetch of sealed images (format 2) against an object store in memory: a sealed
 * local image goes up as it is (one new header per file, chunk-sized pieces), comes back verified,
 * and a stored chunk that was tampered with is refused before the fetched image exists.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ObjectFiles } from '@drover/bus';
import { DroverError, ErrorCode, isDroverError, nullLogger } from '@drover/common';
import type { ImageFile } from '@drover/protocol';
import type { Agent } from './agent.js';
import {
  localImageName,
  openFile,
  sealFile,
  sealImage,
  SEALED_HEADER_BYTES,
} from './image-crypto.js';
import { fetchImage, moveImage, pushImage } from './image-sets.js';
import { ImageStore, MANIFEST_FILE, type ImageManifest } from './image-store.js';

const CHUNK = 512 * 1024;

/** The parts of ObjectFiles a push and a fetch use, in memory; every put's pieces kept. */
class MemoryObjects {
  readonly chunkBytes = CHUNK;
  readonly objects = new Map<string, Buffer>();
  readonly pieces = new Map<string, number[]>();

  async put(name: string, data: AsyncIterable<Uint8Array>): Promise<void> {
    const parts: Buffer[] = [];
    for await (const c of data) parts.push(Buffer.from(c));
    this.objects.set(name, Buffer.concat(parts));
    this.pieces.set(
      name,
      parts.map((p) => p.length),
    );
  }

  async *get(name: string): AsyncGenerator<Uint8Array> {
    const o = this.objects.get(name);
    if (!o) throw new DroverError(ErrorCode.NotFound, `no object ${name}`);
    for (let i = 0; i < o.length; i += CHUNK) yield Buffer.from(o.subarray(i, i + CHUNK));
  }
}

let dir: string;
let agent: Agent;
let images: ImageStore;
const store = new MemoryObjects();
const objects = async (): Promise<ObjectFiles> => store as unknown as ObjectFiles;
const key = randomBytes(32);
const plain = new Map([
  ['core-1.img', randomBytes(300)],
  ['pages-1.img', randomBytes(2 * 1024 * 1024 + 12_345)],
]);
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * A local image of files `of` as a checkpoint leaves it; `recorded: false` as an older agent did
 * (no checksums). Its files' checksums.
 */
async function localImage(
  imageId: string,
  recorded = true,
  of: ReadonlyMap<string, Buffer> = plain,
): Promise<ImageFile[]> {
  const imageDir = await images.create(imageId);
  const files: ImageFile[] = [];
  for (const [name, bytes] of of) {
    const from = join(dir, `${imageId}-${name}.plain`);
    await writeFile(from, bytes);
    const sum = await sealFile(from, join(imageDir, name), key, localImageName(imageId, name));
    assert.deepEqual(sum, { size: bytes.length, sha256: sha(bytes) });
    files.push({ name, ...sum });
    await rm(from);
  }
  await images.writeManifest({ ...manifestOf(imageId, imageDir), ...(recorded ? { files } : {}) });
  return files;
}

/** The manifest of a test image `imageId` in `imageDir`, without its files. */
function manifestOf(imageId: string, imageDir: string): ImageManifest {
  return {
    imageId,
    jobId: 'job-1',
    host: 'h1',
    dir: imageDir,
    createdAt: new Date().toISOString(),
    leaveRunning: true,
    sizeBytes: 0,
    frozenMs: 0,
    dumpMs: 0,
    job: {},
    pids: [],
    sealed: true,
  } as unknown as ImageManifest;
}

const push = (imageId: string, prefix: string) =>
  pushImage(agent, objects, { imageId, prefix, key: key.toString('base64') });

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drover-image-sets-'));
  images = new ImageStore(dir);
  agent = { images, log: nullLogger, config: { hostId: 'h2' } } as unknown as Agent;
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('a sealed image goes up as it is, comes back verified, and its copy goes up as it is', async () => {
  await localImage('img-a');
  const pushed = await push('img-a', 's1/job-1');
  for (const [name, bytes] of plain) {
    const { pack, ...sums } = pushed.files.find((x) => x.name === name)!;
    assert.deepEqual(sums, { name, size: bytes.length, sha256: sha(bytes) });
    // The stored bytes are the local file's but for its header: a large file's an object of its
    // own, sent in the store's chunks; a small one's in the image's pack, where its record says.
    assert.equal(pack === undefined, name === 'pages-1.img');
    const local = await readFile(join(images.dir('img-a'), name));
    const stored = pack
      ? store.objects.get('s1/job-1/.pack')!.subarray(pack.offset, pack.offset + pack.length)
      : store.objects.get(`s1/job-1/${name}`)!;
    assert.equal(stored.length, local.length);
    assert.ok(stored.subarray(SEALED_HEADER_BYTES).equals(local.subarray(SEALED_HEADER_BYTES)));
    assert.ok(
      !stored.subarray(0, SEALED_HEADER_BYTES).equals(local.subarray(0, SEALED_HEADER_BYTES)),
    );
    if (pack) continue;
    const pieces = store.pieces.get(`s1/job-1/${name}`)!;
    assert.ok(
      pieces.slice(0, -1).every((n) => n === CHUNK),
      `${name}: ${pieces.join(' ')}`,
    );
  }
  // The manifest is plaintext locally, sealed in the store (in the pack: it is small).
  assert.ok(pushed.files.some((f) => f.name === MANIFEST_FILE && f.pack !== undefined));
  assert.deepEqual([...store.objects.keys()].filter((o) => o.startsWith('s1/')).sort(), [
    's1/job-1/.pack',
    's1/job-1/pages-1.img',
  ]);

  const fetched = await fetchImage(agent, objects, {
    imageId: 'img-b',
    prefix: 's1/job-1',
    key: key.toString('base64'),
    files: pushed.files,
  });
  assert.equal(fetched.host, 'h2');
  const manifest = await images.readManifest('img-b');
  // The local image records its files' checksums, not where they were in the store.
  assert.deepEqual(
    manifest.files,
    pushed.files
      .filter((f) => f.name !== MANIFEST_FILE)
      .map(({ name, size, sha256 }) => ({ name, size, sha256 })),
  );
  for (const [name, bytes] of plain) {
    const parts: Uint8Array[] = [];
    for await (const c of openFile(
      join(images.dir('img-b'), name),
      key,
      localImageName('img-b', name),
    )) {
      parts.push(c);
    }
    assert.ok(Buffer.concat(parts).equals(bytes), name);
  }
  // The fetched copy is pushed as it is too: the same chunks under another set's name.
  await push('img-b', 's2/job-1');
  const a = store.objects.get('s1/job-1/pages-1.img')!;
  const b = store.objects.get('s2/job-1/pages-1.img')!;
  assert.ok(a.subarray(SEALED_HEADER_BYTES).equals(b.subarray(SEALED_HEADER_BYTES)));
});

test('a stored chunk tampered with is refused: the fetch fails naming the file, leaving nothing', async () => {
  await localImage('img-c');
  const pushed = await push('img-c', 's3/job-1');
  const name = 's3/job-1/pages-1.img';
  const good = store.objects.get(name)!;
  // A flipped bit in the first chunk's ciphertext, in the last record's tag, in the header.
  for (const at of [SEALED_HEADER_BYTES + 100, good.length - 1, SEALED_HEADER_BYTES - 1]) {
    const bad = Buffer.from(good);
    bad[at]! ^= 0x04;
    store.objects.set(name, bad);
    await assert.rejects(
      fetchImage(agent, objects, {
        imageId: 'img-d',
        prefix: 's3/job-1',
        key: key.toString('base64'),
        files: pushed.files,
      }),
      (e: unknown) =>
        isDroverError(e, 'DATA_LOSS') && /image file s3\/job-1\/pages-1.img failed/.test(String(e)),
    );
    assert.deepEqual(
      (await readdir(images.imagesDir)).filter((d) => d.includes('img-d')),
      [],
      'nothing of the failed fetch is left',
    );
  }
  store.objects.set(name, good);
});

test('an image of an older agent (no checksums recorded) is opened and sealed for the store', async () => {
  await localImage('img-e', false);
  const pushed = await push('img-e', 's4/job-1');
  const local = await readFile(join(images.dir('img-e'), 'pages-1.img'));
  const stored = store.objects.get('s4/job-1/pages-1.img')!;
  assert.ok(!stored.subarray(SEALED_HEADER_BYTES).equals(local.subarray(SEALED_HEADER_BYTES)));
  assert.deepEqual(
    pushed.files.find((f) => f.name === 'pages-1.img'),
    {
      name: 'pages-1.img',
      size: plain.get('pages-1.img')!.length,
      sha256: sha(plain.get('pages-1.img')!),
    },
  );
  await fetchImage(agent, objects, {
    imageId: 'img-f',
    prefix: 's4/job-1',
    key: key.toString('base64'),
    files: pushed.files,
  });
});

test('a local file cut short is refused by the push itself', async () => {
  await localImage('img-g');
  const path = join(images.dir('img-g'), 'pages-1.img');
  const local = await readFile(path);
  await writeFile(path, local.subarray(0, local.length - 1000));
  await assert.rejects(push('img-g', 's5/job-1'), (e: unknown) => isDroverError(e, 'DATA_LOSS'));
});

test('small files go up in one pack beside at most 4 large ones; the files keep their order', async () => {
  // An image like a process tree's: dozens of small files and a few large pages files.
  const sizes = new Map<string, number>();
  for (let i = 0; i < 40; i++) sizes.set(`core-${String(i).padStart(2, '0')}.img`, 200 + i);
  for (let i = 0; i < 6; i++) sizes.set(`pages-${i}.img`, 300 * 1024 + i);
  const files = await localImage(
    'img-many',
    true,
    new Map([...sizes].map(([name, size]) => [name, randomBytes(size)])),
  );
  // A store whose puts take a while, counting how many small and large run at once.
  const now = { small: 0, large: 0 };
  const most = { small: 0, large: 0 };
  const slow = {
    chunkBytes: CHUNK,
    async put(name: string, data: AsyncIterable<Uint8Array>): Promise<void> {
      const kind = name.endsWith('/.pack') ? 'small' : 'large';
      now[kind]++;
      most[kind] = Math.max(most[kind], now[kind]);
      for await (const _ of data) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 20));
      now[kind]--;
    },
  };
  const pushed = await pushImage(agent, async () => slow as unknown as ObjectFiles, {
    imageId: 'img-many',
    prefix: 's3/job-1',
    key: key.toString('base64'),
  });
  assert.deepEqual(
    pushed.files.map((f) => f.name),
    [...sizes.keys(), MANIFEST_FILE].sort(),
  );
  assert.deepEqual(
    pushed.files.filter((f) => f.name !== MANIFEST_FILE).map(({ pack: _, ...f }) => f),
    files.sort((a, b) => a.name.localeCompare(b.name)),
  );
  // The small files and the manifest, back to back in the pack; the large ones alone.
  const packed = pushed.files.filter((f) => f.pack !== undefined);
  assert.deepEqual(
    packed.map((f) => f.name),
    [...[...sizes.keys()].filter((n) => n.startsWith('core-')), MANIFEST_FILE].sort(),
  );
  packed.reduce((at, f) => (assert.equal(f.pack!.offset, at), at + f.pack!.length), 0);
  assert.equal(most.large, 4);
  assert.equal(most.small, 1);
});

/** A fetch of `files` from `prefix` as image `imageId`: refused with DATA_LOSS, leaving nothing. */
async function refused(
  imageId: string,
  prefix: string,
  files: ImageFile[],
  message: RegExp,
): Promise<void> {
  await assert.rejects(
    fetchImage(agent, objects, { imageId, prefix, key: key.toString('base64'), files }),
    (e: unknown) => isDroverError(e, 'DATA_LOSS') && message.test(String(e)),
  );
  assert.deepEqual(
    (await readdir(images.imagesDir)).filter((d) => d.includes(imageId)),
    [],
    'nothing of the failed fetch is left',
  );
}

test('a pack tampered with, cut short, padded or swapped is refused before the image exists', async () => {
  const twins = new Map([
    ['core-1.img', randomBytes(300)],
    ['core-2.img', randomBytes(300)],
    ['mm-1.img', randomBytes(9000)],
    ['pages-1.img', randomBytes(300 * 1024)],
  ]);
  await localImage('img-p', true, twins);
  const pushed = await push('img-p', 's6/job-1');
  const other = await push('img-p', 's6/job-2');
  const object = 's6/job-1/.pack';
  const good = store.objects.get(object)!;
  const at = (name: string) => pushed.files.find((f) => f.name === name)!.pack!;
  const cases: [string, Buffer, RegExp][] = [];
  // A flipped bit in core-2's ciphertext: its chunk fails, named after it.
  const flipped = Buffer.from(good);
  flipped[at('core-2.img').offset + SEALED_HEADER_BYTES + 20]! ^= 0x10;
  cases.push(['flipped', flipped, /image file s6\/job-1\/core-2.img failed/]);
  // Cut short, and padded: not the files the record lists.
  cases.push(['cut', good.subarray(0, good.length - 7), /image pack s6\/job-1\/.pack .*ends at/]);
  cases.push(['padded', Buffer.concat([good, Buffer.alloc(1)]), /bytes past its last file/]);
  // core-1 and core-2 swapped (the same length): each header names the other file.
  const a = at('core-1.img');
  const b = at('core-2.img');
  assert.equal(a.length, b.length);
  const swapped = Buffer.from(good);
  good.copy(swapped, a.offset, b.offset, b.offset + b.length);
  good.copy(swapped, b.offset, a.offset, a.offset + a.length);
  cases.push(['swapped', swapped, /image file s6\/job-1\/core-1.img failed/]);
  // Another image's pack of the same files (the same layout): every header names job-2.
  const foreign = store.objects.get('s6/job-2/.pack')!;
  assert.deepEqual(
    other.files.map((f) => f.pack),
    pushed.files.map((f) => f.pack),
  );
  cases.push(['foreign', foreign, /image file s6\/job-1\/\S+ failed/]);
  for (const [what, bytes, message] of cases) {
    store.objects.set(object, bytes);
    await refused(`img-p-${what}`, 's6/job-1', pushed.files, message);
  }
  // A record whose offsets leave a gap or overlap is refused before a byte is read.
  store.objects.set(object, good);
  const gap = pushed.files.map((f) =>
    f.name === 'core-2.img' ? { ...f, pack: { ...f.pack!, offset: f.pack!.offset + 1 } } : f,
  );
  await refused('img-p-gap', 's6/job-1', gap, /core-2.img is recorded at/);
  // The pack missing altogether: NOT_FOUND from the store, nothing left either.
  store.objects.delete(object);
  await assert.rejects(
    fetchImage(agent, objects, {
      imageId: 'img-p-gone',
      prefix: 's6/job-1',
      key: key.toString('base64'),
      files: pushed.files,
    }),
    (e: unknown) => isDroverError(e, 'NOT_FOUND'),
  );
  store.objects.set(object, good);
  await fetchImage(agent, objects, {
    imageId: 'img-p-ok',
    prefix: 's6/job-1',
    key: key.toString('base64'),
    files: pushed.files,
  });
});

test('a set stored before packs (every file an object of its own) is still fetched', async () => {
  await localImage('img-old');
  // The objects as pushes before packs left them: each file sealed alone under its own name,
  // recorded without a place in a pack.
  const manifestBytes = await readFile(join(images.dir('img-old'), MANIFEST_FILE));
  const files: ImageFile[] = [];
  for (const [name, bytes] of [...plain, [MANIFEST_FILE, manifestBytes] as const]) {
    const object = `s7/job-1/${name}`;
    const parts: Uint8Array[] = [];
    for await (const c of sealImage(
      (async function* () {
        yield bytes;
      })(),
      key,
      object,
    )) {
      parts.push(c);
    }
    store.objects.set(object, Buffer.concat(parts));
    files.push({ name, size: bytes.length, sha256: sha(bytes) });
  }
  await fetchImage(agent, objects, {
    imageId: 'img-old-back',
    prefix: 's7/job-1',
    key: key.toString('base64'),
    files,
  });
  for (const [name, bytes] of plain) {
    const parts: Uint8Array[] = [];
    const path = join(images.dir('img-old-back'), name);
    for await (const c of openFile(path, key, localImageName('img-old-back', name))) parts.push(c);
    assert.ok(Buffer.concat(parts).equals(bytes), name);
  }
  assert.ok(!store.objects.has('s7/job-1/.pack'));
});

/**
 * An image as a cluster's cut leaves it: CRIU's plaintext in a scratch directory, waiting for its
 * seal (a read, or its deadline) or a move. Its scratch's path.
 */
async function cutImage(imageId: string): Promise<string> {
  const imageDir = await images.create(imageId);
  const scratch = join(dir, `${imageId}-dump`);
  await mkdir(scratch);
  for (const [name, bytes] of plain) await writeFile(join(scratch, name), bytes);
  const manifest = manifestOf(imageId, imageDir);
  const seal = async (): Promise<void> => {
    const files: ImageFile[] = [];
    for (const name of plain.keys()) {
      const local = localImageName(imageId, name);
      files.push({
        name,
        ...(await sealFile(join(scratch, name), join(imageDir, name), key, local)),
      });
    }
    await images.writeManifest({ ...manifest, files });
    await rm(scratch, { recursive: true });
  };
  images.finishLater({ ...manifest }, seal, false, {
    manifest: { ...manifest },
    plainDir: scratch,
    discard: async () => {
      await rm(imageDir, { recursive: true, force: true });
      await rm(scratch, { recursive: true, force: true });
    },
  });
  return scratch;
}

const move = (imageId: string, prefix: string, faults = {}) =>
  moveImage(agent, objects, { imageId, prefix, key: key.toString('base64') }, faults);

test("a cut's image moves straight from its plaintext into the store and comes back verified; it never lands on the disk", async () => {
  const scratch = await cutImage('img-m1');
  const moved = await move('img-m1', 's8/job-1');
  for (const [name, bytes] of plain) {
    const { pack, ...sums } = moved.files.find((x) => x.name === name)!;
    assert.deepEqual(sums, { name, size: bytes.length, sha256: sha(bytes) });
    assert.equal(pack === undefined, name === 'pages-1.img');
  }
  assert.ok(moved.files.some((f) => f.name === MANIFEST_FILE && f.pack !== undefined));
  assert.deepEqual([...store.objects.keys()].filter((o) => o.startsWith('s8/')).sort(), [
    's8/job-1/.pack',
    's8/job-1/pages-1.img',
  ]);
  // Gone from this host, plaintext and all, and never sealed onto its disk.
  await assert.rejects(images.readManifest('img-m1'), (e: unknown) =>
    isDroverError(e, 'NOT_FOUND'),
  );
  await assert.rejects(readdir(images.dir('img-m1')), { code: 'ENOENT' });
  await assert.rejects(readdir(scratch), { code: 'ENOENT' });
  // A repeat (a controller that took over) gets the same answer; the image is not asked for.
  assert.deepEqual(await move('img-m1', 's8/job-1'), moved);

  await fetchImage(agent, objects, {
    imageId: 'img-m1-back',
    prefix: 's8/job-1',
    key: key.toString('base64'),
    files: moved.files,
  });
  const back = await images.readManifest('img-m1-back');
  assert.equal(back.jobId, 'job-1');
  for (const [name, bytes] of plain) {
    const parts: Uint8Array[] = [];
    const path = join(images.dir('img-m1-back'), name);
    for await (const c of openFile(path, key, localImageName('img-m1-back', name))) parts.push(c);
    assert.ok(Buffer.concat(parts).equals(bytes), name);
  }
});

test('a move that fails leaves the image where it was: sealed when read, moved by the next try', async () => {
  await cutImage('img-m2');
  await assert.rejects(move('img-m2', 's9/job-1', { failPushAfterFiles: 0 }), /injected fault/);
  // Still this host's image: read, it is sealed, with every file.
  const manifest = await images.readManifest('img-m2');
  assert.deepEqual(manifest.files!.map((f) => f.name).sort(), [...plain.keys()].sort());
  // Sealed already, it moves as a push would send it, and goes.
  const moved = await move('img-m2', 's9/job-1');
  assert.equal(moved.files.length, plain.size + 1);
  await assert.rejects(images.readManifest('img-m2'), (e: unknown) =>
    isDroverError(e, 'NOT_FOUND'),
  );
});
