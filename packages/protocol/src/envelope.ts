/** The reply envelope every request/reply uses, and the message size limit. */
import { DroverError, ErrorCode } from '@drover/common';
import { errorToFailure, failureToError, isFailure, type Failure } from './failure.js';

/** Requests and replies larger than this are refused before parsing. */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

/** A reply: a result, or a failure. */
export type Reply<T> = { ok: true; result: T } | { ok: false; failure: Failure };

/**
 * Encode a successful reply; one over the size limit becomes a typed failure instead (NATS would
 * refuse to carry it, and the caller would wait for nothing).
 */
export function okReply<T>(result: T): Uint8Array {
  const bytes = Buffer.from(JSON.stringify({ ok: true, result } satisfies Reply<T>));
  if (bytes.byteLength <= MAX_REPLY_BYTES) return bytes;
  return failReply(
    new DroverError(
      ErrorCode.InvalidArgument,
      `the reply would be ${bytes.byteLength} bytes, more than ${MAX_REPLY_BYTES}; ask for less`,
      { details: { size: bytes.byteLength, limit: MAX_REPLY_BYTES } },
    ),
  );
}

/** Replies larger than this are not sent (room is left for NATS headers within 1 MiB). */
export const MAX_REPLY_BYTES = MAX_MESSAGE_BYTES - 4096;

/** Encode a failed reply. */
export function failReply(err: unknown): Uint8Array {
  return Buffer.from(JSON.stringify({ ok: false, failure: errorToFailure(err) }));
}

/** Parse JSON bytes with the size limit; a typed INVALID_ARGUMENT on anything else. */
export function decodeJson(bytes: Uint8Array): unknown {
  if (bytes.byteLength > MAX_MESSAGE_BYTES) {
    throw new DroverError(
      ErrorCode.InvalidArgument,
      `message larger than ${MAX_MESSAGE_BYTES} bytes`,
      {
        details: { size: bytes.byteLength },
      },
    );
  }
  if (bytes.byteLength === 0) return undefined;
  try {
    return JSON.parse(
      Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'),
    );
  } catch (err) {
    throw new DroverError(ErrorCode.InvalidArgument, 'message is not valid JSON', { cause: err });
  }
}

/** Decode a reply: the result, or the failure thrown as a typed error. */
export function decodeReply(bytes: Uint8Array): unknown {
  const v = decodeJson(bytes) as Partial<Reply<unknown>> | undefined;
  if (v && v.ok === true && 'result' in v) return v.result;
  if (v && v.ok === false && isFailure(v.failure)) throw failureToError(v.failure);
  throw new DroverError(ErrorCode.Internal, 'malformed reply', { details: { reply: v } });
}
