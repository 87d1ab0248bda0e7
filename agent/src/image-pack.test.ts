/** An image's pack: written as its files come, read back file by file however its chunks fall. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { isDroverError } from '@drover/common';
import { packStream, unpack, type PackedFile } from './image-pack.js';

/** `bytes` in pieces of `size`. */
async function* cut(bytes: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

async function packOf(sizes: number[]): Promise<{ bytes: Buffer; files: PackedFile[] }> {
  const sealed = sizes.map((n) => randomBytes(n));
  const pack = packStream(sizes.length, 2, async (i) => {
    // Later files ready first: the pack keeps the files' order all the same.
    await new Promise((r) => setTimeout(r, (sizes.length - i) * 3));
    return { name: `f-${i}`, sealed: sealed[i]!, size: i, sha256: '0'.repeat(64) };
  });
  const parts: Uint8Array[] = [];
  for await (const c of pack.data) parts.push(c);
  return { bytes: Buffer.concat(parts), files: pack.files };
}

test('a pack is its files back to back, each found where the index says, in any chunking', async () => {
  const { bytes, files } = await packOf([100, 1, 5000, 77]);
  assert.deepEqual(
    files.map((f) => [f.name, f.pack.offset, f.pack.length]),
    [
      ['f-0', 0, 100],
      ['f-1', 100, 1],
      ['f-2', 101, 5000],
      ['f-3', 5101, 77],
    ],
  );
  for (const size of [1, 7, 100, 4096, bytes.length]) {
    // Given out of order, read in the pack's.
    const got: string[] = [];
    for await (const { file, sealed } of unpack(cut(bytes, size), [...files].reverse(), 'p')) {
      const { offset, length } = file.pack;
      assert.ok(sealed.equals(bytes.subarray(offset, offset + length)), `${file.name} ${size}`);
      got.push(file.name);
    }
    assert.deepEqual(got, ['f-0', 'f-1', 'f-2', 'f-3']);
  }
});

test('a pack that is not exactly its recorded files is DATA_LOSS', async () => {
  const { bytes, files } = await packOf([10, 20, 30]);
  const read = async (b: Buffer, fs: PackedFile[]): Promise<void> => {
    for await (const _ of unpack(cut(b, 8), fs, 's/j/.pack'));
  };
  const dataLoss = (re: RegExp) => (e: unknown) =>
    isDroverError(e, 'DATA_LOSS') && re.test(String(e));
  await assert.rejects(read(bytes.subarray(0, 59), files), dataLoss(/ends at 59, inside f-2/));
  await assert.rejects(read(Buffer.concat([bytes, Buffer.alloc(1)]), files), dataLoss(/past/));
  const overlap = files.map((f) =>
    f.name === 'f-1' ? { ...f, pack: { offset: 9, length: 21 } } : f,
  );
  await assert.rejects(read(bytes, overlap), dataLoss(/f-1 is recorded at 9, not 10/));
  await read(bytes, files);
});
