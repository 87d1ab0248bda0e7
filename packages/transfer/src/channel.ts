/**
 * FrameChannel: one socket carrying frames both ways, shared by client and receiver. It owns the
 * decoder, a bounded inbound queue (pausing the socket when it fills), write backpressure,
 * idle/stall timeouts, the first-error-wins failure of the stream, and the lingering close.
 *
 * Failure and close, in order (why: so the peer reads our ERROR frame instead of a TCP reset):
 * 1. the first error is recorded; later ones are ignored (the first error wins);
 * 2. if the peer should hear about it, an ERROR frame is written;
 * 3. our side is half-closed (`end`), and inbound data is read and discarded until the peer
 *    closes too, or `LINGER_MS` passes and the socket is destroyed. Destroying a socket with
 *    unread inbound data makes the kernel send RST, which can discard our ERROR frame in flight.
 */
import type { Socket } from 'node:net';
import { DroverError, ErrorCode, type Logger } from '@drover/common';
import { errorToFailure } from '@drover/protocol';
import { TransferError } from './errors.js';
import { FrameDecoder, encodeFrame, encodeJsonFrame, type Frame, type FrameType } from './frame.js';
import { parseFailure } from './messages.js';

/** How long a failed or finished stream waits for the peer to close before destroying it. */
export const LINGER_MS = 2000;
/** Inbound frames queued before the socket is paused (each ≤ 4 MiB, usually ≤ 1 MiB). */
const QUEUE_HIGH = 16;
const QUEUE_LOW = 4;
/** Bytes a sender may queue in the socket's buffer before it waits for `drain`. */
export const WRITE_AHEAD_BYTES = 4 * 1024 * 1024;

interface Waiter {
  resolve: (frame: Frame) => void;
  reject: (err: unknown) => void;
  arm: () => void;
  timer: NodeJS.Timeout | undefined;
}

/** Frames over a socket; see the module comment for the failure protocol. @internal */
export class FrameChannel {
  readonly decoder: FrameDecoder;
  /** Resolves when the socket has closed (never rejects). */
  readonly closed: Promise<void>;
  private queue: Frame[] = [];
  private waiter: Waiter | null = null;
  private failed: DroverError | null = null;
  private eof: TransferError | null = null;
  private closing = false;
  private sentBytes = 0;
  private lingerTimer: NodeJS.Timeout | undefined;
  private readonly failListeners = new Set<(err: DroverError) => void>();

  constructor(
    readonly socket: Socket,
    private readonly logger: Logger,
    options: { maxPayload?: number } = {},
  ) {
    this.decoder = new FrameDecoder(options);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', (err) => this.fail(linkError(err, this.decoder.offset), false));
    this.closed = new Promise((resolve) => {
      socket.once('close', () => {
        clearTimeout(this.lingerTimer);
        if (!this.closing) this.fail(this.eof ?? linkError(new Error('socket closed'), 0), false);
        resolve();
      });
    });
  }

  /** The error that ended this stream, if any. */
  get failure(): DroverError | null {
    return this.failed;
  }

  /**
   * PING every `intervalMs` (unless `quiet()` says not now) until `work` settles; returns
   * `work`'s outcome. Either end keeps the other's idle timeout from firing while it works.
   */
  async pingWhile<T>(work: Promise<T>, intervalMs: number, quiet: () => boolean): Promise<T> {
    const timer = setInterval(() => {
      if (quiet() || this.failed) return;
      this.send('PING', undefined, intervalMs * 5).catch(() => {});
    }, intervalMs);
    try {
      return await work;
    } finally {
      clearInterval(timer);
    }
  }

  /** Bytes written to the socket so far. */
  get bytesSent(): number {
    return this.sentBytes;
  }

  /** `host:port` of the peer, for logs. */
  get peer(): string {
    return `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? '?'}`;
  }

  /**
   * The next non-PING frame. Rejects with the stream's failure, with a `truncated` error if the
   * peer closed first, or with a `timeout` error (which also fails the stream and tells the
   * peer) when no frame at all (PINGs count) arrives for `timeoutMs`.
   */
  next(timeoutMs: number, what = 'frame'): Promise<Frame> {
    if (this.failed) return Promise.reject(this.failed);
    const frame = this.queue.shift();
    if (frame) {
      if (this.socket.isPaused() && this.queue.length <= QUEUE_LOW) this.socket.resume();
      return Promise.resolve(frame);
    }
    if (this.eof) return Promise.reject(this.eof);
    if (this.waiter) return Promise.reject(new Error('FrameChannel.next called concurrently'));
    return new Promise<Frame>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: undefined,
        arm: () => {
          clearTimeout(waiter.timer);
          waiter.timer = setTimeout(() => {
            const err = new TransferError(`no ${what} within ${timeoutMs} ms`, {
              kind: 'timeout',
              frame: null,
              offset: this.decoder.offset,
            });
            this.fail(err, true);
          }, timeoutMs);
        },
      };
      this.waiter = waiter;
      waiter.arm();
    });
  }

  /** Send one frame; resolves once the socket accepts more (awaits `drain` up to `stallMs`). */
  send(type: FrameType, payload: Uint8Array | undefined, stallMs: number): Promise<void> {
    return this.writeEncoded(encodeFrame(type, payload), stallMs);
  }

  /** Send one frame with a JSON payload; see `send`. */
  sendJson(type: FrameType, value: unknown, stallMs: number): Promise<void> {
    return this.writeEncoded(encodeJsonFrame(type, value), stallMs);
  }

  /**
   * Write encoded bytes, honouring backpressure: once more than `WRITE_AHEAD_BYTES` wait in the
   * socket's buffer, wait for `drain`. (Waiting whenever `write` returns false — past 16 KiB —
   * would let the kernel's send buffer run dry while the next frame is prepared.)
   */
  async writeEncoded(bytes: Buffer, stallMs: number): Promise<void> {
    if (!this.writeRaw(bytes) && this.socket.writableLength > WRITE_AHEAD_BYTES) {
      this.flush(); // a corked socket never drains
      await this.waitFor('drain', stallMs, "the peer's reading");
    }
  }

  /**
   * Hold frames back until `flush`, to write several small ones with one TLS record and one
   * system call (a directory of small files). At most one level: `flush` releases them all.
   */
  cork(): void {
    if (this.socket.writableCorked === 0) this.socket.cork();
  }

  /** Write whatever `cork` held back. */
  flush(): void {
    while (this.socket.writableCorked > 0) this.socket.uncork();
  }

  /** Bytes written to the socket and not yet handed to the kernel (held back by `cork` too). */
  get queuedBytes(): number {
    return this.socket.writableLength;
  }

  /** Write bytes without waiting; returns `socket.write`'s verdict. Throws if the stream ended. */
  writeRaw(bytes: Buffer): boolean {
    if (this.failed) throw this.failed;
    if (this.socket.destroyed || this.socket.writableEnded) {
      throw this.eof ?? linkError(new Error('socket is closed'), this.sentBytes);
    }
    this.sentBytes += bytes.length;
    return this.socket.write(bytes);
  }

  /** Wait for a socket event for at most `timeoutMs`; rejects if the stream fails meanwhile. */
  waitFor(event: string, timeoutMs: number, what: string): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<void>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.socket.off(event, onEvent);
        this.failListeners.delete(onFail);
      };
      const onEvent = (): void => {
        done();
        resolve();
      };
      const onFail = (err: DroverError): void => {
        done();
        reject(err);
      };
      const timer = setTimeout(() => {
        const err = new TransferError(`no progress from ${what} within ${timeoutMs} ms`, {
          kind: 'timeout',
          frame: null,
          offset: this.sentBytes,
        });
        onFail(this.fail(err, true));
      }, timeoutMs);
      this.socket.once(event, onEvent);
      this.failListeners.add(onFail);
    });
  }

  /**
   * Fail the stream with `err` unless it already failed; returns the error that won. With
   * `notifyPeer`, an ERROR frame carrying `err` is written first (best effort).
   */
  fail(err: DroverError, notifyPeer: boolean): DroverError {
    if (this.failed) return this.failed;
    this.failed = err;
    this.logger.debug('stream failed', { peer: this.peer, err, notifyPeer });
    this.queue = [];
    const waiter = this.waiter;
    this.waiter = null;
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.reject(err);
    }
    for (const listener of [...this.failListeners]) listener(err);
    if (notifyPeer && this.socket.writable && !this.socket.writableEnded) {
      this.socket.write(encodeError(err));
    }
    this.shutdown();
    this.socket.resume(); // read and discard until the peer closes
    return err;
  }

  /** Close gracefully after the last frame (RESULT sent or received). */
  close(): void {
    this.closing = true;
    this.shutdown();
  }

  /** Close at once, without an ERROR frame. */
  destroy(): void {
    this.closing = true;
    this.socket.destroy();
  }

  private shutdown(): void {
    if (this.socket.destroyed || this.lingerTimer) return;
    this.socket.end();
    this.lingerTimer = setTimeout(() => this.socket.destroy(), LINGER_MS).unref();
  }

  private onData(chunk: Buffer): void {
    if (this.failed) return;
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.fail(err as TransferError, true);
      return;
    }
    for (const frame of frames) {
      if (frame.type === 'PING') {
        this.waiter?.arm();
      } else if (frame.type === 'ERROR') {
        this.fail(TransferError.fromFailure(parseFailure(frame), frame.offset), false);
        return;
      } else if (this.waiter) {
        const waiter = this.waiter;
        this.waiter = null;
        clearTimeout(waiter.timer);
        waiter.resolve(frame);
      } else {
        this.queue.push(frame);
      }
    }
    if (this.queue.length >= QUEUE_HIGH) this.socket.pause();
  }

  private onEnd(): void {
    if (this.failed) return;
    try {
      this.decoder.end();
    } catch (err) {
      this.fail(err as TransferError, false);
      return;
    }
    this.eof = new TransferError(`peer closed the stream at offset ${this.decoder.offset}`, {
      kind: 'truncated',
      frame: null,
      offset: this.decoder.offset,
    });
    const waiter = this.waiter;
    this.waiter = null;
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.reject(this.eof);
    }
  }
}

/** An ERROR frame for `err`; falls back to a bare failure if the full one is too large. */
function encodeError(err: DroverError): Buffer {
  const failure = errorToFailure(err);
  try {
    return encodeJsonFrame('ERROR', failure);
  } catch {
    return encodeJsonFrame('ERROR', { ...failure, details: {}, cause: undefined });
  }
}

const TLS_AUTH_CODE = /CERT|ALERT|^UNABLE_TO_|SELF_SIGNED|PURPOSE/;

/** A socket error as a TransferError: TLS certificate problems are `auth`, the rest `link`. */
export function linkError(err: Error & { code?: unknown }, offset: number): TransferError {
  const code = typeof err.code === 'string' ? err.code : undefined;
  const kind = code !== undefined && TLS_AUTH_CODE.test(code) ? 'auth' : 'link';
  return new TransferError(
    `stream ${kind === 'auth' ? 'refused by TLS' : 'link failed'}: ${err.message.trim()}`,
    { kind, frame: null, offset },
    { cause: err, details: code === undefined ? {} : { errno: code } },
  );
}

/** Wrap anything thrown into a DroverError for the stream (TransferErrors pass unchanged). */
export function asStreamError(err: unknown): DroverError {
  if (err instanceof DroverError) return err;
  const e = err as Error & { code?: unknown };
  return new DroverError(ErrorCode.Internal, e instanceof Error ? e.message : String(err), {
    cause: err,
    details: typeof e?.code === 'string' ? { errno: e.code } : {},
  });
}
