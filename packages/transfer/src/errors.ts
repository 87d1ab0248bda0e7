/** TransferError: every way an image-set stream can fail, with the frame and stream offset. */
import { DroverError, ErrorCode, type DroverErrorOptions } from '@drover/common';
import { failureToError, type Failure } from '@drover/protocol';

/**
 * What went wrong, in `details.kind`. Link-level kinds (`truncated`, `link`, `timeout`) are
 * UNAVAILABLE and retryable; the stream itself being wrong (`checksum`, `protocol`, `auth`) is
 * INVALID_ARGUMENT and not retryable; `remote` carries the peer's own code and retryability.
 */
export const TransferErrorKind = {
  /** A frame's CRC32 (or a file's sha256) did not match its payload. */
  checksum: 'checksum',
  /** The stream ended in the middle of a frame, a file or before DONE. */
  truncated: 'truncated',
  /** A frame or message that the protocol does not allow here. */
  protocol: 'protocol',
  /** No frame (or no `drain`) within the idle timeout, or no HELLO in time. */
  timeout: 'timeout',
  /** Wrong, unknown or reused token; or the TLS peer certificate was refused. */
  auth: 'auth',
  /** The peer sent an ERROR frame; code and retryability are the peer's. */
  remote: 'remote',
  /** The socket failed (refused, reset, broken pipe). */
  link: 'link',
} as const;
export type TransferErrorKind = (typeof TransferErrorKind)[keyof typeof TransferErrorKind];

const KIND_CODE: Record<Exclude<TransferErrorKind, 'remote'>, [ErrorCode, boolean]> = {
  checksum: [ErrorCode.InvalidArgument, false],
  protocol: [ErrorCode.InvalidArgument, false],
  auth: [ErrorCode.InvalidArgument, false],
  truncated: [ErrorCode.Unavailable, true],
  timeout: [ErrorCode.Unavailable, true],
  link: [ErrorCode.Unavailable, true],
};

/** Where a TransferError happened. */
export interface TransferErrorFields {
  kind: TransferErrorKind;
  /** Type name of the frame being handled, or null when the failure is not about one frame. */
  frame: string | null;
  /** Byte offset in the stream (bytes received on the reading side, sent on the writing side). */
  offset: number;
}

/** Options beyond DroverError's: `code` overrides the one derived from `kind` (used for remote). */
export interface TransferErrorOptions extends DroverErrorOptions {
  code?: ErrorCode;
}

/** The agent-to-agent stream failed. Branch on `code`; `details.kind` says how. */
export class TransferError extends DroverError {
  readonly kind: TransferErrorKind;
  readonly frame: string | null;
  readonly offset: number;

  constructor(message: string, fields: TransferErrorFields, options: TransferErrorOptions = {}) {
    const [code, retryable] =
      fields.kind === 'remote' ? [ErrorCode.Internal, false] : KIND_CODE[fields.kind];
    super(options.code ?? code, message, {
      retryable: options.retryable ?? retryable,
      ...(options.cause === undefined ? {} : { cause: options.cause }),
      details: {
        ...options.details,
        kind: fields.kind,
        frame: fields.frame,
        offset: fields.offset,
      },
    });
    this.kind = fields.kind;
    this.frame = fields.frame;
    this.offset = fields.offset;
  }

  /**
   * The error a peer reported in an ERROR frame: the peer's code, message and retryability, with
   * `details.kind` 'remote', `details.remoteKind` the peer's own kind (if it was a TransferError)
   * and the reconstructed remote error (from failureToError) as `cause`.
   */
  static fromFailure(failure: Failure, offset: number): TransferError {
    const remote = failureToError(failure);
    const remoteKind = remote.details.kind;
    return new TransferError(
      remote.message,
      { kind: 'remote', frame: 'ERROR', offset },
      {
        code: remote.code,
        retryable: remote.retryable,
        cause: remote,
        details: {
          ...remote.details,
          ...(typeof remoteKind === 'string' ? { remoteKind } : {}),
        },
      },
    );
  }
}

/** True when `err` is a TransferError, optionally of the given kind. */
export function isTransferError(err: unknown, kind?: TransferErrorKind): err is TransferError {
  return err instanceof TransferError && (kind === undefined || err.kind === kind);
}
