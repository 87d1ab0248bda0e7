/** Sealed image files: round trips at every size boundary, and every kind of damage refused. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { isDroverError } from '@drover/common';
import { imageKey, openImage, sealImage } from './image-crypto.js';

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
  await refused(box.subarray(0, 8 + 2 * record));
  await refused(box.subarray(0, box.length - 5));
  await refused(box, 's1/job-b/pages-1.img');
  await refused(box, 's1/job-a/pages-1.img', randomBytes(32));
  const swapped = Buffer.concat([
    box.subarray(0, 8),
    box.subarray(8 + record, 8 + 2 * record),
    box.subarray(8, 8 + record),
    box.subarray(8 + 2 * record),
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
