/**
 * Sealed image files: round trips at every size boundary, every kind of damage refused, format 1
 * still read, a file moved to another name (Rebind) opens only under that name, and a file sealed
 * from the disk (sealFile) in one go or streamed opens the same.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { isDroverError } from '@drover/common';
import {
  imageKey,
  isMovable,
  openFile,
  openImage,
  Rebind,
  rebindImage,
  SEAL_AT_ONCE_BYTES,
  sealFile,
  sealImage,
  SEALED_HEADER_BYTES,
} from './image-crypto.js';

const MiB = 1024 * 1024;
const key = randomBytes(32);

async function* cut(data: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
  if (data.length === 0) return;
}

async function all(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

const sealed = (data: Buffer, name = 's1/job-a/pages-1.img'): Promise<Buffer> =>
  all(sealImage(cut(data, 100_003), key, name));

test('round trips at every size boundary, whatever the input chunking', async () => {
  for (const size of [0, 1, MiB - 1, MiB, MiB + 1, 3.5 * MiB]) {
    const data = randomBytes(size);
    const box = await sealed(data);
    if (size >= 64) assert.ok(!box.includes(data.subarray(0, 64)), 'plaintext in the sealed file');
    // Tiny input chunks (1 to 7 bytes; 4,099 past 2 MiB, to keep the test quick) to whole records.
    for (const step of [size < 2 * MiB ? 1 + (size % 7) : 4099, 65_536, 4 * MiB]) {
      const back = await all(openImage(cut(box, step), key, 's1/job-a/pages-1.img'));
      assert.ok(back.equals(data), `size ${size}, step ${step}`);
    }
  }
});

async function refused(box: Buffer, name = 's1/job-a/pages-1.img', k = key): Promise<void> {
  await assert.rejects(all(openImage(cut(box, 77_777), k, name)), (e) => {
    assert.ok(isDroverError(e, 'DATA_LOSS'), String(e));
    assert.match(String(e), new RegExp(`image file ${name} failed verification`));
    return true;
  });
}

test('a flipped byte, a cut, a wrong name, key, order or trailing bytes are all refused', async () => {
  const data = randomBytes(2.5 * MiB);
  const box = await sealed(data);
  const flipped = Buffer.from(box);
  flipped[Math.floor(box.length / 2)]! ^= 1;
  await refused(flipped);
  // Cut at a record boundary (the last record dropped) and in the middle of one.
  const record = 4 + 12 + MiB + 16;
  const h = SEALED_HEADER_BYTES;
  await refused(box.subarray(0, h + 2 * record));
  await refused(box.subarray(0, box.length - 5));
  await refused(box, 's1/job-b/pages-1.img');
  await refused(box, 's1/job-a/pages-1.img', randomBytes(32));
  const swapped = Buffer.concat([
    box.subarray(0, h),
    box.subarray(h + record, h + 2 * record),
    box.subarray(h, h + record),
    box.subarray(h + 2 * record),
  ]);
  await refused(swapped);
  await refused(Buffer.concat([box, Buffer.from('more')]));
  await refused(Buffer.from('plain bytes, never sealed'));
});

test('imageKey wants exactly 32 bytes', () => {
  assert.equal(imageKey(randomBytes(32).toString('base64')).length, 32);
  assert.throws(
    () => imageKey(randomBytes(16).toString('base64')),
    (e) => isDroverError(e, 'INVALID_ARGUMENT'),
  );
});

/** A file as format 1 sealed it (before file ids): the name in every chunk's additional data. */
function sealedV1(data: Buffer, name: string): Buffer {
  const parts: Buffer[] = [Buffer.from('DRVIMG1\n')];
  const n = Math.max(1, Math.ceil(data.length / MiB));
  for (let i = 0; i < n; i++) {
    const aad = Buffer.alloc(Buffer.byteLength(name) + 5);
    aad.write(name);
    aad.writeUInt32BE(i, aad.length - 5);
    aad[aad.length - 1] = i === n - 1 ? 1 : 0;
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', key, nonce);
    c.setAAD(aad);
    const body = Buffer.concat([c.update(data.subarray(i * MiB, (i + 1) * MiB)), c.final()]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    parts.push(len, nonce, body, c.getAuthTag());
  }
  return Buffer.concat(parts);
}

test('format 1 (images and sets sealed before file ids) still opens, and only as its name', async () => {
  const data = randomBytes(2 * MiB + 5);
  const box = sealedV1(data, 's0/job-a/pages-1.img');
  assert.equal(isMovable(box), false);
  const back = await all(openImage(cut(box, 65_536), key, 's0/job-a/pages-1.img'));
  assert.ok(back.equals(data));
  await refused(box, 's0/job-b/pages-1.img');
  // Not moved: its chunks name their object.
  await assert.rejects(all(rebindImage(cut(box, MiB), key, 's0/job-a/pages-1.img', 'x')), (e) =>
    isDroverError(e, 'DATA_LOSS'),
  );
});

test('a moved file keeps its chunks and opens only under its new name', async () => {
  const local = 'local/img-1/pages-1.img';
  const object = 's1/job-a/pages-1.img';
  // Pieces of every size, in place or not (tiny ones over a smaller file): the same bytes out.
  for (const [size, step, inPlace] of [
    [2.5 * MiB, 512 * 1024, true],
    [2.5 * MiB, SEALED_HEADER_BYTES + 1, false],
    [MiB + 3, 4099, false],
    [100_000, 7, false],
  ] as const) {
    const data = randomBytes(size);
    const box = await sealed(data, local);
    assert.ok(isMovable(box));
    const r = new Rebind(key, local, object, { inPlace, plainBytes: data.length });
    const parts: Uint8Array[] = [];
    for await (const c of cut(Buffer.from(box), step)) parts.push(...r.push(c));
    r.end();
    const moved = Buffer.concat(parts);
    assert.equal(moved.length, box.length);
    assert.ok(moved.subarray(SEALED_HEADER_BYTES).equals(box.subarray(SEALED_HEADER_BYTES)));
    assert.ok((await all(openImage(cut(moved, 100_000), key, object))).equals(data));
    await refused(moved, local);
    await refused(moved, 's1/job-b/pages-1.img');
  }
});

test('a stored chunk tampered with after a move is refused, and so is any mix of two files', async () => {
  const object = 's1/job-a/pages-1.img';
  const a = randomBytes(2 * MiB + 3);
  const moved = await all(
    rebindImage(cut(await sealed(a, 'local/i/p'), MiB), key, 'local/i/p', object),
  );
  const record = 4 + 12 + MiB + 16;
  const h = SEALED_HEADER_BYTES;
  // One flipped bit in each part of a record: its length, nonce, ciphertext and tag.
  for (const at of [h + 3, h + 4 + 5, h + 16 + 1000, h + record - 1, moved.length - 1]) {
    const bad = Buffer.from(moved);
    bad[at]! ^= 0x10;
    await refused(bad, object);
  }
  // Header bits: the magic, the file id, the nonce, the tag.
  for (const at of [0, 8, 8 + 16, h - 1]) {
    const bad = Buffer.from(moved);
    bad[at]! ^= 0x01;
    await refused(bad, object);
  }
  // Another file's header on these chunks, and this header on another file's chunks: the
  // other file sealed with the same key under the same name.
  const other = await all(
    rebindImage(
      cut(await sealed(randomBytes(2 * MiB + 3), 'local/j/p'), MiB),
      key,
      'local/j/p',
      object,
    ),
  );
  await refused(Buffer.concat([other.subarray(0, h), moved.subarray(h)]), object);
  // A chunk of the other file in the middle of this one (same index, same name).
  await refused(
    Buffer.concat([
      moved.subarray(0, h + record),
      other.subarray(h + record, h + 2 * record),
      moved.subarray(h + 2 * record),
    ]),
    object,
  );
});

test('a move refuses a wrong name or key, a cut, padding and another size before a byte goes on', async () => {
  const data = randomBytes(MiB + 10);
  const box = await sealed(data, 'local/i/p');
  const moving = (b: Buffer, from = 'local/i/p', k = key, size?: number) =>
    all(rebindImage(cut(Buffer.from(b), 65_536), k, from, 'set/j/p', size));
  const refusedMove = (p: Promise<unknown>, why: RegExp) =>
    assert.rejects(p, (e) => isDroverError(e, 'DATA_LOSS') && why.test(String(e)));
  await refusedMove(moving(box, 'local/i/q'), /header does not authenticate/);
  await refusedMove(moving(box, 'local/i/p', randomBytes(32)), /header does not authenticate/);
  await refusedMove(moving(box.subarray(0, box.length - 1)), /ends before its last chunk/);
  await refusedMove(moving(box.subarray(0, 20)), /ends before its header/);
  await refusedMove(moving(Buffer.concat([box, Buffer.alloc(4)])), /short chunk before the last/);
  await refusedMove(moving(box, 'local/i/p', key, data.length + 1), /holds \d+ bytes, not/);
  assert.equal((await moving(box, 'local/i/p', key, data.length)).length, box.length);
});

test('sealFile: a file sealed in one go and one streamed in chunks open alike, with their checksums', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'seal-file-'));
  try {
    const sizes = [0, 1, SEAL_AT_ONCE_BYTES, SEAL_AT_ONCE_BYTES + 1, MiB, MiB + 1, 2.5 * MiB];
    for (const size of sizes) {
      const data = randomBytes(size);
      const from = join(dir, `plain-${size}`);
      const to = join(dir, `sealed-${size}`);
      await writeFile(from, data);
      const name = `local/img-1/pages-${size}.img`;
      const sum = await sealFile(from, to, key, name);
      assert.equal(sum.size, size);
      assert.equal(sum.sha256, createHash('sha256').update(data).digest('hex'));
      assert.equal((await stat(to)).mode & 0o777, 0o600);
      const box = await readFile(to);
      // A header, then one record per started MiB (an empty file: one empty record).
      const records = Math.max(1, Math.ceil(size / MiB));
      assert.equal(box.length, SEALED_HEADER_BYTES + records * 32 + size, `size ${size}`);
      assert.ok(isMovable(box));
      assert.deepEqual(await all(openFile(to, key, name)), data, `size ${size}`);
      await assert.rejects(all(openFile(to, key, `local/img-1/other-${size}.img`)));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('sealFile refuses to overwrite, either way, and leaves no file open behind it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'seal-file-'));
  const open = async (): Promise<number> => (await readdir('/proc/self/fd')).length;
  /** Descriptors open once the ones being closed are closed (a stream closes its file later). */
  const settled = async (want: number): Promise<number> => {
    for (let i = 0; i < 50 && (await open()) !== want; i++) await sleep(10);
    return open();
  };
  try {
    // The crypto threads started once (their own descriptors), before counting.
    await writeFile(join(dir, 'warm'), randomBytes(3 * MiB));
    await sealFile(join(dir, 'warm'), join(dir, 'warm.sealed'), key, 'local/img-1/warm.img');
    for (const size of [10, 3 * MiB]) {
      const from = join(dir, `plain-${size}`);
      const to = join(dir, `sealed-${size}`);
      await writeFile(from, randomBytes(size));
      await writeFile(to, 'already here');
      const before = await open();
      await assert.rejects(sealFile(from, to, key, 'local/img-1/x.img'), /EEXIST/);
      assert.equal(await settled(before), before, `size ${size}: a descriptor left open`);
      assert.equal(await readFile(to, 'utf8'), 'already here');
    }
    await assert.rejects(sealFile(join(dir, 'missing'), join(dir, 'out'), key, 'x'), /ENOENT/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
