/**
 * Image files at rest are sealed — in the image-set store and in a host's local images alike:
 * AES-256-GCM over 1 MiB chunks (on the crypto threads: crypto-pool.ts) with a key of 32 random bytes that the requester (the
 * controller: one per image set) hands the agent with each request and that no host keeps.
 * `sealImage`/`openImage` are a pair.
 *
 * Format: the magic `DRVIMG1\n`, then one record per chunk:
 *   u32 BE ciphertext length · 12-byte random nonce · ciphertext · 16-byte GCM tag
 * Each chunk's additional data binds it to its place: the object's name (set/job/file), its index,
 * and whether it is the last one. So a flipped byte, a chunk swapped from another file or image, a
 * reordered chunk and a cut-off file all fail authentication before a byte is used.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { DroverError, ErrorCode } from '@drover/common';
import { cryptoPool } from './crypto-pool.js';

const MAGIC = Buffer.from('DRVIMG1\n');
const CHUNK = 1024 * 1024;
const NONCE = 12;
const TAG = 16;
const HEAD = 4 + NONCE;

/** Key bytes from the wire form (base64 of 32 bytes). */
export function imageKey(base64: string): Buffer {
  const key = Buffer.from(base64, 'base64');
  if (key.length !== 32) {
    throw new DroverError(ErrorCode.InvalidArgument, 'an image-set key is 32 bytes (base64)');
  }
  return key;
}

function aad(name: string, index: number, last: boolean): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(n.length + 5);
  n.copy(b);
  b.writeUInt32BE(index, n.length);
  b[n.length + 4] = last ? 1 : 0;
  return b;
}

/**
 * Bytes in arrival order, joined only when a whole piece is there: every byte is copied about
 * once however small the input chunks are.
 */
class Pending {
  private parts: Buffer[] = [];
  length = 0;

  push(c: Uint8Array): void {
    if (c.length === 0) return;
    this.parts.push(Buffer.from(c.buffer, c.byteOffset, c.length));
    this.length += c.length;
  }

  /** The first `n` bytes (n <= length) as one buffer, still pending. */
  peek(n: number): Buffer {
    if ((this.parts[0]?.length ?? 0) < n) this.parts = [Buffer.concat(this.parts, this.length)];
    return this.parts[0]!.subarray(0, n);
  }

  /** Remove and return the first `n` bytes (n <= length). */
  take(n: number): Buffer {
    const out = this.peek(n);
    const rest = this.parts[0]!.subarray(n);
    if (rest.length) this.parts[0] = rest;
    else this.parts.shift();
    this.length -= n;
    return out;
  }
}

/** Re-cut a byte stream into CHUNK-sized pieces, saying which is the last (one look ahead). */
async function* pieces(input: AsyncIterable<Uint8Array>): AsyncGenerator<[Buffer, boolean]> {
  const buf = new Pending();
  let pending: Buffer | null = null;
  for await (const c of input) {
    buf.push(c);
    while (buf.length >= CHUNK) {
      if (pending) yield [pending, false];
      pending = buf.take(CHUNK);
    }
  }
  if (buf.length === 0) {
    yield [pending ?? Buffer.alloc(0), true];
  } else {
    if (pending) yield [pending, false];
    yield [buf.take(buf.length), true];
  }
}

/** Chunks sealed or opened at once (on the crypto threads), delivered in order. */
const PIPELINE = 4;

/** `p`, with a rejection that nobody awaits yet not reported as unhandled (it is awaited later). */
function later<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/** Seal the plaintext `input` of object `name` with `key` (AES-GCM on the crypto threads). */
export async function* sealImage(
  input: AsyncIterable<Uint8Array>,
  key: Buffer,
  name: string,
): AsyncGenerator<Uint8Array> {
  yield MAGIC;
  const crypto = cryptoPool();
  const inflight: Promise<Uint8Array>[] = [];
  let index = 0;
  for await (const [plain, last] of pieces(input)) {
    inflight.push(later(crypto.seal(key, aad(name, index++, last), plain)));
    if (inflight.length >= PIPELINE) yield await inflight.shift()!;
  }
  while (inflight.length > 0) yield await inflight.shift()!;
}

function damaged(name: string, why: string): DroverError {
  return new DroverError(
    ErrorCode.DataLoss,
    `image file ${name} failed verification: ${why} (tampered, truncated or the wrong key)`,
    { details: { name } },
  );
}

/** Open sealed object `name`: yields its plaintext; throws DATA_LOSS on any damage. */
export async function* openImage(
  input: AsyncIterable<Uint8Array>,
  key: Buffer,
  name: string,
): AsyncGenerator<Uint8Array> {
  const crypto = cryptoPool();
  const buf = new Pending();
  let magic = false;
  let index = 0;
  let ended = false;
  const inflight: {
    index: number;
    opened: Promise<{ plain: Uint8Array; last: boolean } | null>;
  }[] = [];
  /** Start opening every whole record that has arrived. */
  const start = (): void => {
    for (;;) {
      if (!magic) {
        if (buf.length < MAGIC.length) return;
        if (!buf.take(MAGIC.length).equals(MAGIC)) throw damaged(name, 'not a sealed image');
        magic = true;
      }
      if (buf.length < HEAD) return;
      const len = buf.peek(HEAD).readUInt32BE(0);
      if (len > CHUNK) throw damaged(name, `a chunk claims ${len} bytes`);
      if (buf.length < HEAD + len + TAG) return;
      const record = buf.take(HEAD + len + TAG);
      const i = index++;
      inflight.push({
        index: i,
        opened: later(
          crypto.open(
            key,
            aad(name, i, false),
            aad(name, i, true),
            record.subarray(4, HEAD),
            record.subarray(HEAD, HEAD + len),
            record.subarray(HEAD + len),
          ),
        ),
      });
    }
  };
  /** The next opened chunk, in order; the last one is the one that authenticates as last. */
  const next = async (): Promise<Uint8Array> => {
    const { index: i, opened } = inflight.shift()!;
    const r = await opened;
    if (ended) throw damaged(name, 'data after the last chunk');
    if (r === null) throw damaged(name, `chunk ${i} does not authenticate`);
    if (r.last) ended = true;
    return r.plain;
  };
  for await (const c of input) {
    buf.push(c);
    start();
    while (inflight.length > PIPELINE) yield await next();
  }
  start();
  while (inflight.length > 0) yield await next();
  if (!ended || buf.length > 0) throw damaged(name, 'it ends before its last chunk');
}

/**
 * The name a local image file is sealed under: its image and file name, so a file moved from
 * another image or renamed within one fails authentication.
 */
export function localImageName(imageId: string, file: string): string {
  return `local/${imageId}/${file}`;
}

/** Seal the plaintext file `from` into a new file `to` (0600) as object `name`. */
export async function sealFile(from: string, to: string, key: Buffer, name: string): Promise<void> {
  await pipeline(
    sealImage(createReadStream(from) as AsyncIterable<Uint8Array>, key, name),
    createWriteStream(to, { mode: 0o600, flags: 'wx' }),
  );
}

/** The plaintext of sealed file `path` (object `name`); DATA_LOSS on any damage, as it reads. */
export function openFile(path: string, key: Buffer, name: string): AsyncGenerator<Uint8Array> {
  return openImage(createReadStream(path) as AsyncIterable<Uint8Array>, key, name);
}

/** Open sealed file `from` into a new plaintext file `to` (0600). */
export async function openFileInto(
  from: string,
  to: string,
  key: Buffer,
  name: string,
): Promise<void> {
  await pipeline(openFile(from, key, name), createWriteStream(to, { mode: 0o600, flags: 'wx' }));
}
