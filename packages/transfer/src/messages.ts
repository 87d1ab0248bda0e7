/** The JSON payloads of the stream's control frames, their validation, and image file names. */
import { int, obj, str, isFailure, type Failure, type Schema } from '@drover/protocol';
import { TransferError } from './errors.js';
import type { Frame, FrameType } from './frame.js';

/** Version a HELLO announces; a receiver refuses any other. */
export const TRANSFER_PROTOCOL_VERSION = 1;

/** Longest image file name, in UTF-8 bytes (a Linux NAME_MAX). */
export const MAX_FILE_NAME_BYTES = 255;

const HEX64 = /^[0-9a-f]{64}$/;

/** HELLO: the sender names the migration and presents its one-time token. */
export const helloSchema = obj({
  migrationId: str({ min: 1, max: 256 }),
  token: str({ min: 1, max: 1024 }),
  version: int({ max: 0xffff }),
});
export type Hello = ReturnType<typeof helloSchema.parse>;

/** FILE: a new image file starts; DATA frames with exactly `size` bytes follow. */
export const fileSchema = obj({
  name: str({ min: 1, max: MAX_FILE_NAME_BYTES }),
  size: int(),
  mode: int({ max: 0o7777 }),
});
export type FileHeader = ReturnType<typeof fileSchema.parse>;

/** FILE_END: the sha256 (lowercase hex) of the file just sent. */
export const fileEndSchema = obj({ sha256: str({ pattern: HEX64 }) });

/** DONE: the sender's totals, checked against what the receiver counted. */
export const doneSchema = obj({ files: int(), bytes: int() });
export type Totals = ReturnType<typeof doneSchema.parse>;

/** ACCEPT: empty object. */
export const acceptSchema = obj({});

/**
 * Why `name` is not a plain image file name (or null if it is one): no '/', not '.' or '..',
 * no NUL, 1..255 UTF-8 bytes.
 */
export function fileNameProblem(name: string): string | null {
  if (name.length === 0) return 'empty file name';
  if (name.includes('/')) return `file name ${JSON.stringify(name)} contains '/'`;
  if (name.includes('\0')) return 'file name contains NUL';
  if (name === '.' || name === '..') return `file name ${JSON.stringify(name)} is not a file`;
  if (Buffer.byteLength(name, 'utf8') > MAX_FILE_NAME_BYTES) {
    return `file name longer than ${MAX_FILE_NAME_BYTES} bytes`;
  }
  return null;
}

/** Parse a frame's JSON payload with `schema`; anything wrong is a `protocol` TransferError. */
export function parseJsonFrame<T>(frame: Frame, schema: Schema<T>): T {
  let value: unknown;
  try {
    value = JSON.parse(frame.payload.toString('utf8'));
  } catch (err) {
    throw protocolError(frame, `payload is not JSON`, err);
  }
  try {
    return schema.parse(value);
  } catch (err) {
    throw protocolError(frame, (err as Error).message, err);
  }
}

/** Decode an ERROR frame's payload; a malformed one still yields an (INTERNAL) failure. */
export function parseFailure(frame: Frame): Failure {
  try {
    const v: unknown = JSON.parse(frame.payload.toString('utf8'));
    if (isFailure(v)) return v;
  } catch {
    // fall through: the peer failed and could not even say why
  }
  return {
    code: 'INTERNAL',
    message: 'peer sent a malformed ERROR frame',
    retryable: false,
    details: {},
  };
}

/** A `protocol` TransferError about `frame` (or a frame type, with an offset). */
export function protocolError(
  frame: Frame | { type: FrameType | null; offset: number },
  problem: string,
  cause?: unknown,
): TransferError {
  return new TransferError(
    `${frame.type ?? 'stream'} at offset ${frame.offset}: ${problem}`,
    { kind: 'protocol', frame: frame.type, offset: frame.offset },
    cause === undefined ? {} : { cause },
  );
}
