/**
 * Image push and fetch of sealed images (format 2) against an object store in memory: a sealed
 * local image goes up as it is (one new header per file, chunk-sized pieces), comes back verified,
 * and a stored chunk that was tampered with is refused before the fetched image exists.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ObjectFiles } from '@drover/bus';
import { DroverError, ErrorCode, isDroverError, nullLogger } from '@drover/common';
import type { ImageFile } from '@drover/protocol';
import type { Agent } from './agent.js';
import { localImageName, openFile, sealFile, SEALED_HEADER_BYTES } from './image-crypto.js';
import { fetchImage, pushImage } from './image-sets.js';
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
  const manifest = {
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
    ...(recorded ? { files } : {}),
  } as unknown as ImageManifest;
  await images.writeManifest(manifest);
  return files;
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
    const f = pushed.files.find((x) => x.name === name);
    assert.deepEqual(f, { name, size: bytes.length, sha256: sha(bytes) });
    // The stored object is the local file but for its header; sent in the store's chunks.
    const local = await readFile(join(images.dir('img-a'), name));
    const stored = store.objects.get(`s1/job-1/${name}`)!;
    assert.equal(stored.length, local.length);
    assert.ok(stored.subarray(SEALED_HEADER_BYTES).equals(local.subarray(SEALED_HEADER_BYTES)));
    assert.ok(
      !stored.subarray(0, SEALED_HEADER_BYTES).equals(local.subarray(0, SEALED_HEADER_BYTES)),
    );
    const pieces = store.pieces.get(`s1/job-1/${name}`)!;
    assert.ok(
      pieces.slice(0, -1).every((n) => n === CHUNK),
      `${name}: ${pieces.join(' ')}`,
    );
  }
  // The manifest is plaintext locally, sealed in the store.
  assert.ok(pushed.files.some((f) => f.name === MANIFEST_FILE));

  const fetched = await fetchImage(agent, objects, {
    imageId: 'img-b',
    prefix: 's1/job-1',
    key: key.toString('base64'),
    files: pushed.files,
  });
  assert.equal(fetched.host, 'h2');
  const manifest = await images.readManifest('img-b');
  assert.deepEqual(
    manifest.files,
    pushed.files.filter((f) => f.name !== MANIFEST_FILE),
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

test('small files go up many at once beside at most 4 large ones; the files keep their order', async () => {
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
      const kind = (sizes.get(name.split('/').pop()!) ?? Infinity) > 256 * 1024 ? 'large' : 'small';
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
    pushed.files.filter((f) => f.name !== MANIFEST_FILE),
    files.sort((a, b) => a.name.localeCompare(b.name)),
  );
  assert.equal(most.large, 4);
  assert.equal(most.small, 16);
});
