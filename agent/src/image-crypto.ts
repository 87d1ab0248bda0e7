/**
 * Image files at rest are sealed — in the image-set store and in a host's local images alike:
 * AES-256-GCM over 1 MiB chunks (on the crypto threads: crypto-pool.ts) with a key of 32 random bytes that the requester (the
 * controller: one per image set) hands the agent with each request and that no host keeps.
 * `sealImage`/`openImage` are a pair; `rebindImage` moves a sealed file to another name without
 * touching its chunks (an image push and fetch: the bytes go as they are, no second seal).
 *
 * Format 2 (written): a header, then one record per chunk:
 *   `DRVIMG2\n` · 16-byte random file id · 12-byte random nonce · 16-byte GCM tag
 *   u32 BE ciphertext length · 12-byte random nonce · ciphertext · 16-byte GCM tag   (per chunk)
 * The header's tag authenticates (nothing encrypted, additional data only) the file id and the
 * object's name (set/job/file, or a local image's `local/<image>/<file>`); each chunk's additional
 * data binds it to the file id, its index and whether it is the last. So a flipped byte, a chunk
 * swapped from another file or image, a reordered chunk, a cut-off file and a file under another
 * name all fail authentication before a byte is used. Renaming re-seals only the header (same file
 * id, new name, new nonce): the copies of one file share their chunks, which hold the same bytes.
 *
 * Format 1 (still read): `DRVIMG1\n`, then the same records, each chunk's additional data the
 * object's name, its index and whether it is the last.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  createWriteStream,
  fstatSync,
  openSync,
  readSync,
  writeSync,
} from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { DroverError, ErrorCode } from '@drover/common';
import { cryptoPool, INLINE_BYTES } from './crypto-pool.js';

const MAGIC_1 = Buffer.from('DRVIMG1\n');
const MAGIC = Buffer.from('DRVIMG2\n');
const CHUNK = 1024 * 1024;
const NONCE = 12;
const TAG = 16;
const HEAD = 4 + NONCE;
const FILE_ID = 16;
/** Format 2's header: magic, file id, nonce, tag. */
const HEADER = MAGIC.length + FILE_ID + NONCE + TAG;
/** Bytes before the first record of a format-2 file. */
export const SEALED_HEADER_BYTES = HEADER;
/** Plaintext bytes per sealed record: a read of this size is sealed as it is, not re-cut. */
export const SEAL_CHUNK_BYTES = CHUNK;

/** Key bytes from the wire form (base64 of 32 bytes). */
export function imageKey(base64: string): Buffer {
  const key = Buffer.from(base64, 'base64');
  if (key.length !== 32) {
    throw new DroverError(ErrorCode.InvalidArgument, 'an image-set key is 32 bytes (base64)');
  }
  return key;
}

/** Format 1's chunk binding: the object's name, the index, last or not. */
function aad1(name: string, index: number, last: boolean): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(n.length + 5);
  n.copy(b);
  b.writeUInt32BE(index, n.length);
  b[n.length + 4] = last ? 1 : 0;
  return b;
}

// Format 2's additional data starts with a label per kind (NUL-terminated: no name has a NUL),
// so a header's tag never passes for a chunk's, nor a format-1 chunk's for either.
const CHUNK_LABEL = Buffer.from('DRVIMG2 chunk\0');
const NAME_LABEL = Buffer.from('DRVIMG2 name\0');

/** Format 2's chunk binding: the file id, the index, last or not. */
function aad2(fileId: Uint8Array, index: number, last: boolean): Buffer {
  const b = Buffer.alloc(CHUNK_LABEL.length + FILE_ID + 5);
  CHUNK_LABEL.copy(b);
  b.set(fileId, CHUNK_LABEL.length);
  b.writeUInt32BE(index, CHUNK_LABEL.length + FILE_ID);
  b[b.length - 1] = last ? 1 : 0;
  return b;
}

/** Format 2's header binding file `fileId` to object `name` (a GMAC: nothing is encrypted). */
function sealHeader(key: Buffer, fileId: Uint8Array, name: string): Buffer {
  const nonce = randomBytes(NONCE);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(Buffer.concat([NAME_LABEL, fileId, Buffer.from(name)]));
  c.final();
  return Buffer.concat([MAGIC, fileId, nonce, c.getAuthTag()]);
}

/** The file id of a format-2 header, if it authenticates as object `name`; else null. */
function openHeader(key: Buffer, header: Buffer, name: string): Buffer | null {
  if (header.length !== HEADER || !header.subarray(0, MAGIC.length).equals(MAGIC)) return null;
  const fileId = header.subarray(MAGIC.length, MAGIC.length + FILE_ID);
  const nonce = header.subarray(MAGIC.length + FILE_ID, HEADER - TAG);
  try {
    const d = createDecipheriv('aes-256-gcm', key, nonce);
    d.setAAD(Buffer.concat([NAME_LABEL, fileId, Buffer.from(name)]));
    d.setAuthTag(header.subarray(HEADER - TAG));
    d.final();
    return Buffer.from(fileId);
  } catch {
    return null;
  }
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
  const fileId = randomBytes(FILE_ID);
  yield sealHeader(key, fileId, name);
  const crypto = cryptoPool();
  const inflight: Promise<Uint8Array>[] = [];
  let index = 0;
  for await (const [plain, last] of pieces(input)) {
    inflight.push(later(crypto.seal(key, aad2(fileId, index++, last), plain)));
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

/**
 * Open sealed object `name`: yields its plaintext; throws DATA_LOSS on any damage, naming the
 * file `shownAs` (a fetched copy is named after the stored object it came from).
 */
export async function* openImage(
  input: AsyncIterable<Uint8Array>,
  key: Buffer,
  name: string,
  shownAs = name,
): AsyncGenerator<Uint8Array> {
  const crypto = cryptoPool();
  const buf = new Pending();
  /** A chunk's additional data: format 1's or 2's, known once the header is read. */
  let binding: ((index: number, last: boolean) => Buffer) | null = null;
  let index = 0;
  let ended = false;
  const inflight: {
    index: number;
    opened: Promise<{ plain: Uint8Array; last: boolean } | null>;
  }[] = [];
  /** Start opening every whole record that has arrived. */
  const start = (): void => {
    for (;;) {
      if (!binding) {
        if (buf.length < MAGIC.length) return;
        const magic = buf.peek(MAGIC.length);
        if (magic.equals(MAGIC)) {
          if (buf.length < HEADER) return;
          const fileId = openHeader(key, buf.take(HEADER), name);
          if (!fileId) throw damaged(shownAs, 'its header does not authenticate');
          binding = (i, last) => aad2(fileId, i, last);
        } else if (magic.equals(MAGIC_1)) {
          buf.take(MAGIC.length);
          binding = (i, last) => aad1(name, i, last);
        } else {
          throw damaged(shownAs, 'not a sealed image');
        }
      }
      if (buf.length < HEAD) return;
      const len = buf.peek(HEAD).readUInt32BE(0);
      if (len > CHUNK) throw damaged(shownAs, `a chunk claims ${len} bytes`);
      if (buf.length < HEAD + len + TAG) return;
      const record = buf.take(HEAD + len + TAG);
      const i = index++;
      inflight.push({
        index: i,
        opened: later(
          crypto.open(
            key,
            binding(i, false),
            binding(i, true),
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
    if (ended) throw damaged(shownAs, 'data after the last chunk');
    if (r === null) throw damaged(shownAs, `chunk ${i} does not authenticate`);
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
  if (!ended || buf.length > 0) throw damaged(shownAs, 'it ends before its last chunk');
}

/**
 * A format-2 sealed file moved from name `from` to name `to` as it streams: its header must
 * authenticate as `from` (the key and the name), a new header binds its file id to `to`, and its
 * records pass as they are — not opened, so no chunk is authenticated here (whoever opens the
 * copy does that, every chunk, as for any sealed file). What is checked on the way is the records'
 * framing: whole records, each chunk but the last a full one, and as many plaintext bytes as
 * `plainBytes` when given; a file cut short, padded or of another size is refused here already.
 */
export class Rebind {
  private header: Buffer[] = [];
  private headerBytes = 0;
  /** Bytes of the current record still to pass (its nonce, ciphertext and tag). */
  private skip = 0;
  private readonly lenField = Buffer.alloc(4);
  private lenAt = 0;
  private records = 0;
  private lastLen = -1;
  /** Plaintext bytes the records hold (GCM's ciphertext is as long as its plaintext). */
  plainBytes = 0;

  /**
   * `inPlace`: the new header is written over the old one in the input's own buffer (the input
   * is not read again by anyone), so a piece goes on whole instead of in two.
   */
  constructor(
    private readonly key: Buffer,
    private readonly from: string,
    private readonly to: string,
    private readonly options: { inPlace?: boolean; plainBytes?: number } = {},
  ) {}

  /** The bytes to pass on for input `c`. */
  push(c: Uint8Array): Uint8Array[] {
    let piece = Buffer.from(c.buffer, c.byteOffset, c.length);
    const out: Uint8Array[] = [];
    if (this.headerBytes < HEADER) {
      const need = HEADER - this.headerBytes;
      if (this.headerBytes === 0 && piece.length >= HEADER && this.options.inPlace === true) {
        piece.set(this.rebound(piece.subarray(0, HEADER)), 0);
        this.headerBytes = HEADER;
        this.frame(piece.subarray(HEADER));
        return [piece];
      }
      this.header.push(piece.subarray(0, need));
      this.headerBytes += Math.min(need, piece.length);
      if (this.headerBytes < HEADER) return out;
      out.push(this.rebound(Buffer.concat(this.header)));
      this.header = [];
      piece = piece.subarray(need);
    }
    this.frame(piece);
    if (piece.length > 0) out.push(piece);
    return out;
  }

  /** Throws unless the file ended after a whole last record (and holds `plainBytes`). */
  end(): void {
    if (this.headerBytes < HEADER) throw damaged(this.from, 'it ends before its header');
    if (this.skip > 0 || this.lenAt > 0 || this.records === 0) {
      throw damaged(this.from, 'it ends before its last chunk');
    }
    const want = this.options.plainBytes;
    if (want !== undefined && want !== this.plainBytes) {
      throw damaged(this.from, `it holds ${this.plainBytes} bytes, not ${want}`);
    }
  }

  private rebound(header: Buffer): Buffer {
    const fileId = openHeader(this.key, header, this.from);
    if (!fileId) {
      const v1 = header.subarray(0, MAGIC.length).equals(MAGIC_1);
      throw damaged(this.from, v1 ? 'format 1 is not moved' : 'its header does not authenticate');
    }
    return sealHeader(this.key, fileId, this.to);
  }

  /** Walk the records' framing through `b`. */
  private frame(b: Buffer): void {
    let at = 0;
    while (at < b.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, b.length - at);
        this.skip -= n;
        at += n;
        continue;
      }
      this.lenField[this.lenAt++] = b[at++]!;
      if (this.lenAt < 4) continue;
      this.lenAt = 0;
      const len = this.lenField.readUInt32BE(0);
      if (len > CHUNK) throw damaged(this.from, `a chunk claims ${len} bytes`);
      // sealImage cuts full chunks: only the last may be shorter.
      if (this.records > 0 && this.lastLen !== CHUNK) {
        throw damaged(this.from, 'a short chunk before the last');
      }
      this.records++;
      this.lastLen = len;
      this.plainBytes += len;
      this.skip = NONCE + len + TAG;
    }
  }
}

/** Whether a sealed stream that starts with `head` is in format 2 (so `Rebind` can move it). */
export function isMovable(head: Uint8Array): boolean {
  return head.length >= MAGIC.length && MAGIC.equals(head.subarray(0, MAGIC.length));
}

/** Move the format-2 sealed stream `input` from name `from` to `to` (see Rebind; in place). */
export async function* rebindImage(
  input: AsyncIterable<Uint8Array>,
  key: Buffer,
  from: string,
  to: string,
  plainBytes?: number,
): AsyncGenerator<Uint8Array> {
  const r = new Rebind(key, from, to, {
    inPlace: true,
    ...(plainBytes !== undefined ? { plainBytes } : {}),
  });
  for await (const c of input) yield* r.push(c);
  r.end();
}

/**
 * The sealed file `path` (object `from`) as object `to`, read in pieces of `pieceBytes` (an
 * object store's chunk size: each piece goes on as one chunk, not copied).
 */
export function rebindFile(
  path: string,
  key: Buffer,
  from: string,
  to: string,
  options: { pieceBytes: number; plainBytes?: number },
): AsyncGenerator<Uint8Array> {
  const input = createReadStream(path, { highWaterMark: options.pieceBytes });
  return rebindImage(input as AsyncIterable<Uint8Array>, key, from, to, options.plainBytes);
}

/**
 * The name a local image file is sealed under: its image and file name, so a file moved from
 * another image or renamed within one fails authentication.
 */
export function localImageName(imageId: string, file: string): string {
  return `local/${imageId}/${file}`;
}

/**
 * A plaintext file this size or smaller is sealed in one go: read whole, sealed as one record on
 * this thread (crypto-pool.ts seals a chunk of this size inline too) and written whole. Most
 * files of an image are a few KiB (`core-*`, `mm-*`, `fdinfo-*`...), and their seal was file
 * operations, not crypto: a stream's open, reads, writes and close, each a trip to libuv's threads
 * and back — two thread wake-ups, costly on this VM (docs/PERFORMANCE.md, _Bottlenecks_, 14). The
 * system calls are the same made here; they block the event loop only for their own time (a file
 * of a few KiB, just written by CRIU), with no thread to wake for each.
 */
export const SEAL_AT_ONCE_BYTES = INLINE_BYTES;

/**
 * Seal the plaintext file `from` into a new file `to` (0600) as object `name`. Returns the
 * plaintext's size and SHA-256 (hex), hashed as it passes: what an image push records for the
 * file without opening it again. A small file (SEAL_AT_ONCE_BYTES) is sealed in one go; a larger
 * one streams, read in the seal's own 1 MiB chunks: each read is a chunk, passed on without being
 * joined from pieces (a stream's default 64 KiB reads were 16 trips to libuv's threads and a copy
 * per MiB). Both write the same format: a header, then the records.
 */
export async function sealFile(
  from: string,
  to: string,
  key: Buffer,
  name: string,
): Promise<{ size: number; sha256: string }> {
  const fd = openSync(from, 'r');
  let plain: Buffer | null = null;
  try {
    const size = fstatSync(fd).size;
    if (size <= SEAL_AT_ONCE_BYTES) plain = readWhole(fd, size);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  if (plain) {
    closeSync(fd);
    return sealWhole(plain, to, key, name);
  }
  const hash = createHash('sha256');
  let read = 0;
  // The stream owns the descriptor from here: it closes it when it ends or is destroyed.
  const input = createReadStream(from, { fd, highWaterMark: CHUNK });
  async function* hashed(): AsyncGenerator<Uint8Array> {
    for await (const c of input as AsyncIterable<Uint8Array>) {
      hash.update(c);
      read += c.length;
      yield c;
    }
  }
  try {
    await pipeline(
      sealImage(hashed(), key, name),
      createWriteStream(to, { mode: 0o600, flags: 'wx' }),
    );
  } finally {
    // A pipeline that failed before its first read leaves the stream unread (and its file open).
    input.destroy();
  }
  return { size: read, sha256: hash.digest('hex') };
}

/** The `size` bytes of open file `fd` (fewer if it ends sooner). */
function readWhole(fd: number, size: number): Buffer {
  const buf = Buffer.allocUnsafe(size);
  let at = 0;
  while (at < size) {
    const n = readSync(fd, buf, at, size - at, at);
    if (n === 0) break;
    at += n;
  }
  return buf.subarray(0, at);
}

/** `plain` (one chunk at most) sealed as object `name` into a new file `to` (0600). */
async function sealWhole(
  plain: Buffer,
  to: string,
  key: Buffer,
  name: string,
): Promise<{ size: number; sha256: string }> {
  const fileId = randomBytes(FILE_ID);
  const header = sealHeader(key, fileId, name);
  const record = await cryptoPool().seal(key, aad2(fileId, 0, true), plain);
  const sealed = Buffer.concat([header, record]);
  const fd = openSync(to, 'wx', 0o600);
  try {
    for (let at = 0; at < sealed.length;) at += writeSync(fd, sealed, at);
  } finally {
    closeSync(fd);
  }
  return { size: plain.length, sha256: createHash('sha256').update(plain).digest('hex') };
}

/** The plaintext of sealed file `path` (object `name`); DATA_LOSS on any damage, as it reads. */
export function openFile(
  path: string,
  key: Buffer,
  name: string,
  shownAs = name,
): AsyncGenerator<Uint8Array> {
  return openImage(createReadStream(path) as AsyncIterable<Uint8Array>, key, name, shownAs);
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
