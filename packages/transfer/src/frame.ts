/**
 * The stream's frame codec: frame types, the 12-byte header, `encodeFrame` and the incremental
 * `FrameDecoder`. Pure: no I/O.
 *
 * Wire format (all integers big-endian):
 * ```
 *   0      1      2          4                  8                  12
 *   +------+------+----------+------------------+------------------+----------------
 *   | type | flags| reserved | payload length   | CRC32 of payload | payload ...
 *   |  u8  |  u8  | u16 = 0  | u32 (≤ 4 MiB)    | u32 (zlib.crc32) |
 *   +------+------+----------+------------------+------------------+----------------
 * ```
 * No flags are defined yet: a non-zero `flags` or `reserved` is a protocol error, so a future
 * version can give them meaning without an old peer silently misreading the stream.
 */
import { crc32 } from 'node:zlib';
import { TransferError } from './errors.js';

/**
 * Frame types and their wire values. Payloads: HELLO `{migrationId, token, version}`,
 * ACCEPT `{}`, FILE `{name, size, mode}`, DATA raw bytes of the current file,
 * FILE_END `{sha256}`, DONE `{files, bytes}`, RESULT any JSON object, ERROR a `Failure`,
 * PING empty (keepalive).
 */
export const FrameType = {
  HELLO: 1,
  ACCEPT: 2,
  FILE: 3,
  DATA: 4,
  FILE_END: 5,
  DONE: 6,
  RESULT: 7,
  ERROR: 8,
  PING: 9,
} as const;
/** A frame type name, e.g. `'DATA'`. */
export type FrameType = keyof typeof FrameType;

const TYPE_NAMES = new Map<number, FrameType>(
  Object.entries(FrameType).map(([name, value]) => [value, name as FrameType]),
);

/** Bytes in a frame header. */
export const FRAME_HEADER_BYTES = 12;
/** Largest payload one frame may carry (4 MiB); bigger payloads are split (DATA) or refused. */
export const MAX_FRAME_PAYLOAD = 4 * 1024 * 1024;

/** A decoded frame. `offset` is the stream offset of its first header byte. */
export interface Frame {
  type: FrameType;
  payload: Buffer;
  offset: number;
}

/** Encode one frame (header + payload) into a fresh buffer. Throws for oversize payloads. */
export function encodeFrame(type: FrameType, payload: Uint8Array = EMPTY): Buffer {
  if (FrameType[type] === undefined) throw new TypeError(`unknown frame type ${String(type)}`);
  if (payload.length > MAX_FRAME_PAYLOAD) {
    throw new TransferError(
      `${type} payload of ${payload.length} bytes exceeds ${MAX_FRAME_PAYLOAD}`,
      { kind: 'protocol', frame: type, offset: 0 },
    );
  }
  const frame = allocFrame(payload.length);
  frame.set(payload, FRAME_HEADER_BYTES);
  return sealFrame(frame, type);
}

/**
 * A buffer for one frame with `payloadLength` bytes of payload after the header, for callers
 * that fill the payload in place (a file read straight into it: no copy). Seal it with
 * `sealFrame` once filled. Throws for oversize payloads.
 */
export function allocFrame(payloadLength: number): Buffer {
  if (payloadLength > MAX_FRAME_PAYLOAD) {
    throw new TransferError(`payload of ${payloadLength} bytes exceeds ${MAX_FRAME_PAYLOAD}`, {
      kind: 'protocol',
      frame: null,
      offset: 0,
    });
  }
  return Buffer.allocUnsafe(FRAME_HEADER_BYTES + payloadLength);
}

/**
 * Write the header of `frame` (from `allocFrame`, its payload filled in): type, length (the
 * buffer's length less the header) and the payload's CRC32. Returns `frame`.
 */
export function sealFrame(frame: Buffer, type: FrameType): Buffer {
  const value = FrameType[type];
  if (value === undefined) throw new TypeError(`unknown frame type ${String(type)}`);
  const length = frame.length - FRAME_HEADER_BYTES;
  if (length < 0 || length > MAX_FRAME_PAYLOAD) {
    throw new TransferError(`${type} payload of ${length} bytes exceeds ${MAX_FRAME_PAYLOAD}`, {
      kind: 'protocol',
      frame: type,
      offset: 0,
    });
  }
  frame.writeUInt8(value, 0);
  frame.writeUInt8(0, 1);
  frame.writeUInt16BE(0, 2);
  frame.writeUInt32BE(length, 4);
  frame.writeUInt32BE(crc32(frame.subarray(FRAME_HEADER_BYTES)), 8);
  return frame;
}

/** Encode a frame whose payload is `value` as UTF-8 JSON. */
export function encodeJsonFrame(type: FrameType, value: unknown): Buffer {
  return encodeFrame(type, Buffer.from(JSON.stringify(value), 'utf8'));
}

const EMPTY = new Uint8Array(0);

interface Header {
  type: FrameType;
  length: number;
  crc: number;
  offset: number;
}

/**
 * Incremental decoder: feed it chunks of any size with `push`, get whole frames back. Every
 * header is checked as soon as its 12 bytes arrive (so an oversize length is refused before the
 * payload is buffered) and every payload against its CRC32. After the first error the decoder is
 * poisoned: every later call throws that same error.
 */
export class FrameDecoder {
  /** Largest payload accepted; a server lowers it before authentication. */
  maxPayload: number;
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Stream offset of the first buffered byte. */
  private base = 0;
  private header: Header | null = null;
  private error: TransferError | null = null;

  constructor(options: { maxPayload?: number } = {}) {
    this.maxPayload = Math.min(options.maxPayload ?? MAX_FRAME_PAYLOAD, MAX_FRAME_PAYLOAD);
  }

  /** Bytes consumed so far (offset of the next byte the decoder will see). */
  get offset(): number {
    return this.base + this.buffered;
  }

  /** True when the decoder holds part of a frame. */
  get midFrame(): boolean {
    return this.buffered > 0 || this.header !== null;
  }

  /** Add a chunk; return the frames it completes, in order. Throws TransferError on corruption. */
  push(chunk: Uint8Array): Frame[] {
    if (this.error) throw this.error;
    if (chunk.length > 0) {
      this.chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
      this.buffered += chunk.length;
    }
    const frames: Frame[] = [];
    try {
      for (;;) {
        if (!this.header) {
          if (this.buffered < FRAME_HEADER_BYTES) break;
          this.header = this.parseHeader(this.take(FRAME_HEADER_BYTES));
        }
        const h = this.header;
        if (this.buffered < h.length) break;
        const payload = this.take(h.length);
        this.header = null;
        if (crc32(payload) !== h.crc) {
          throw new TransferError(`${h.type} frame at offset ${h.offset}: CRC32 mismatch`, {
            kind: 'checksum',
            frame: h.type,
            offset: h.offset,
          });
        }
        frames.push({ type: h.type, payload, offset: h.offset });
      }
    } catch (err) {
      this.error = err as TransferError;
      throw err;
    }
    return frames;
  }

  /** The stream ended: throws a `truncated` error if it ended inside a frame. */
  end(): void {
    if (this.error) throw this.error;
    if (!this.midFrame) return;
    const frame = this.header?.type ?? null;
    const start = this.header?.offset ?? this.base;
    this.error = new TransferError(
      `stream ended inside ${frame ?? 'a frame header'} at offset ${this.offset} (frame at ${start})`,
      { kind: 'truncated', frame, offset: this.offset },
    );
    throw this.error;
  }

  private parseHeader(h: Buffer): Header {
    const offset = this.base - FRAME_HEADER_BYTES;
    const value = h.readUInt8(0);
    const type = TYPE_NAMES.get(value);
    const protocolError = (problem: string): TransferError =>
      new TransferError(`frame at offset ${offset}: ${problem}`, {
        kind: 'protocol',
        frame: type ?? null,
        offset,
      });
    if (type === undefined) throw protocolError(`unknown frame type ${value}`);
    if (h.readUInt8(1) !== 0 || h.readUInt16BE(2) !== 0) {
      throw protocolError('non-zero flags or reserved bits');
    }
    const length = h.readUInt32BE(4);
    if (length > this.maxPayload) {
      throw protocolError(`${type} payload length ${length} exceeds ${this.maxPayload}`);
    }
    return { type, length, crc: h.readUInt32BE(8), offset };
  }

  /** Remove exactly `n` buffered bytes (n ≤ buffered), copying only when they span chunks. */
  private take(n: number): Buffer {
    this.buffered -= n;
    this.base += n;
    const first = this.chunks[0];
    if (first && first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let used = 0; // whole chunks consumed; removed in one splice (shift per chunk is quadratic)
    while (filled < n) {
      const c = this.chunks[used]!;
      const k = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k === c.length) used += 1;
      else this.chunks[used] = c.subarray(k);
    }
    this.chunks.splice(0, used);
    return out;
  }
}
