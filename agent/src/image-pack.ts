/**
 * An image's pack: its small files in one object of the image-set store, `<set>/<job>/.pack`
 * (IMAGE_PACK_OBJECT). The pack is the files' format-2 sealed bytes one after another, each file
 * sealed — its header bound — under the name it would have as an object of its own
 * (`<set>/<job>/<file>`); the set's record says where each one is (`ImageFile.pack`: offset,
 * length) beside its size and SHA-256. Nothing in the pack is trusted that the record and the key
 * do not vouch for: a file moved within the pack or from another one fails its header, a flipped
 * byte its chunk, and a pack whose bytes are not exactly the recorded files, in order, is refused
 * here. `packStream` writes one, `unpack` reads one: a pair.
 */
import { DroverError, ErrorCode } from '@drover/common';
import { IMAGE_PACK_OBJECT, type ImageFile } from '@drover/protocol';

/** The pack object of image `prefix` (`<set>/<job>`). */
export function packObject(prefix: string): string {
  return `${prefix}/${IMAGE_PACK_OBJECT}`;
}

/** A file of an image stored in its pack (its record says where). */
export type PackedFile = ImageFile & { pack: { offset: number; length: number } };

/** Whether the set's record puts file `f` in its image's pack. */
export function isPacked(f: ImageFile): f is PackedFile {
  return f.pack !== undefined;
}

/** One file for a pack: its sealed bytes (bound to its own object name), plaintext size, SHA-256. */
export interface SealedFile {
  name: string;
  sealed: Uint8Array;
  size: number;
  sha256: string;
}

/**
 * `load(0)`, `load(1)`... in order, up to `ahead` of them running at once: small files are read
 * and sealed a few at a time while the pack goes up, as they were uploaded a few at a time.
 */
async function* inOrder<T>(
  count: number,
  ahead: number,
  load: (index: number) => Promise<T>,
): AsyncGenerator<T> {
  const running: Promise<T>[] = [];
  let next = 0;
  const fill = (): void => {
    while (next < count && running.length < ahead) {
      const p = load(next++);
      // Awaited in turn below; a failure that is not reached yet is not reported as unhandled.
      p.catch(() => undefined);
      running.push(p);
    }
  };
  fill();
  while (running.length > 0) {
    const v = await running.shift()!;
    fill();
    yield v;
  }
}

/**
 * A pack's bytes, made of `count` files that `load(i)` seals (`ahead` at once), and its index:
 * `files` is complete, in the files' order with each one's place in the pack, once the stream
 * has ended.
 */
export function packStream(
  count: number,
  ahead: number,
  load: (index: number) => Promise<SealedFile>,
): { data: AsyncGenerator<Uint8Array>; files: PackedFile[] } {
  const files: PackedFile[] = [];
  async function* data(): AsyncGenerator<Uint8Array> {
    let offset = 0;
    for await (const f of inOrder(count, ahead, load)) {
      files.push({
        name: f.name,
        size: f.size,
        sha256: f.sha256,
        pack: { offset, length: f.sealed.length },
      });
      offset += f.sealed.length;
      yield f.sealed;
    }
  }
  return { data: data(), files };
}

function damagedPack(object: string, why: string): DroverError {
  return new DroverError(
    ErrorCode.DataLoss,
    `image pack ${object} does not match its record: ${why} (tampered or truncated)`,
    { details: { name: object } },
  );
}

/**
 * The recorded files of pack `object` as its bytes `input` arrive: each file's sealed bytes, in
 * the pack's order, still sealed (the caller opens and checks each one). DATA_LOSS unless the pack
 * is exactly the recorded files back to back: a gap, an overlap, a pack cut short or one with
 * bytes past its last file.
 */
export async function* unpack(
  input: AsyncIterable<Uint8Array>,
  files: readonly PackedFile[],
  object: string,
): AsyncGenerator<{ file: PackedFile; sealed: Buffer }> {
  const order = [...files].sort((a, b) => a.pack.offset - b.pack.offset);
  let expected = 0;
  for (const f of order) {
    if (f.pack.offset !== expected) {
      throw damagedPack(object, `${f.name} is recorded at ${f.pack.offset}, not ${expected}`);
    }
    expected += f.pack.length;
  }
  let i = 0;
  let part: Buffer[] = [];
  let have = 0;
  let at = 0;
  for await (const c of input) {
    let chunk = Buffer.from(c.buffer, c.byteOffset, c.length);
    while (chunk.length > 0) {
      const f = order[i];
      if (!f) throw damagedPack(object, `bytes past its last file at ${at}`);
      const n = Math.min(f.pack.length - have, chunk.length);
      part.push(chunk.subarray(0, n));
      have += n;
      at += n;
      chunk = chunk.subarray(n);
      if (have === f.pack.length) {
        const sealed = part.length === 1 ? part[0]! : Buffer.concat(part, have);
        part = [];
        have = 0;
        i++;
        yield { file: f, sealed };
      }
    }
  }
  const short = order[i];
  if (short) throw damagedPack(object, `it ends at ${at}, inside ${short.name}`);
}
