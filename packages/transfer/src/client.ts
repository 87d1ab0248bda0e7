/**
 * StreamClient: the source agent's side of an image-set stream — connect and authenticate, send
 * files as FILE/DATA/FILE_END with backpressure, then DONE, and wait for the receiver's RESULT.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { open, readdir, type FileHandle } from 'node:fs/promises';
import net from 'node:net';
import { basename, join } from 'node:path';
import tls from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { DroverError, ErrorCode, nullLogger, toDroverError, type Logger } from '@drover/common';
import { identityOfSubject, json } from '@drover/protocol';
import { FrameChannel, asStreamError } from './channel.js';
import { TransferError } from './errors.js';
import { FRAME_HEADER_BYTES, allocFrame, sealFrame } from './frame.js';
import {
  TRANSFER_PROTOCOL_VERSION,
  acceptSchema,
  fileNameProblem,
  parseJsonFrame,
  protocolError,
  type Totals,
} from './messages.js';
import { ProgressMeter, type ProgressCallback, type TransferProgress } from './progress.js';

/** Largest DATA frame the client sends (the codec allows 4 MiB). */
export const DATA_CHUNK_BYTES = 1024 * 1024;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_IDLE_TIMEOUT_MS = 10_000;

/**
 * Client-side TLS: present `cert`/`key`, verify the server against `ca`, and that its
 * certificate names the agent `peer` (`O=drover, OU=agent, CN=<peer>`) rather than an address.
 */
export interface ClientTlsOptions {
  key: string | Buffer;
  cert: string | Buffer;
  ca: string | Buffer | Array<string | Buffer>;
  /** The host id of the destination agent the server's certificate must name. */
  peer: string;
  /** The CA's revocation list (PEM): a server whose certificate it lists is refused. */
  crl?: string | Buffer;
}

/**
 * TEST-ONLY fault injection. Set only from code (never derived from any wire message or
 * config); production callers leave it undefined. Used by unit and end-to-end tests to corrupt
 * or cut a stream deterministically.
 */
export interface TransferFaults {
  /** Flip one payload byte of the DATA frame with this 0-based index, after its CRC is computed. */
  corruptFrameAt?: number;
  /** Send only the first N file-payload bytes (cutting a DATA frame short), then close. */
  truncateAfterBytes?: number;
  /** Pace file payload to at most this many bytes per second (frames of ≤ 1/10 s each). */
  throttleBytesPerSec?: number;
}

/** Options of `StreamClient.connect`. */
export interface StreamClientOptions {
  host: string;
  port: number;
  migrationId: string;
  /** The one-time token the receiver expects for `migrationId`. */
  token: string;
  /** Connect with mutual TLS. */
  tls?: ClientTlsOptions;
  /** Limit for TCP connect + TLS + HELLO/ACCEPT, each. Default 10 s. */
  connectTimeoutMs?: number;
  /** Limit for a stalled write (no `drain`) and for silence while awaiting RESULT. Default 10 s. */
  idleTimeoutMs?: number;
  onProgress?: ProgressCallback;
  logger?: Logger;
  /** TEST-ONLY: see `TransferFaults`. */
  faults?: TransferFaults;
}

/**
 * Why the server certificate `cert` (already verified against the CA) is not agent `peer`'s, or
 * undefined when it is. Agents' certificates name hosts, not addresses, so the identity in the
 * subject is what is checked.
 */
function serverIdentityProblem(cert: tls.PeerCertificate, peer: string): Error | undefined {
  const s = cert.subject as unknown as Record<string, string | string[] | undefined>;
  const subject = ['O', 'OU', 'CN']
    .map((k) => {
      const v = s[k];
      return typeof v === 'string' ? `${k}=${v}` : '';
    })
    .join('\n');
  const id = identityOfSubject(subject);
  if (id?.role === 'agent' && id.name === peer) return undefined;
  const err = new Error(
    `the stream server's certificate is not agent ${peer}'s (${id ? `${id.role} ${id.name}` : 'not a Drover identity'})`,
  ) as Error & { code: string };
  err.code = 'ERR_TLS_CERT_PEER_IDENTITY';
  return err;
}

let lastContext: { from: ClientTlsOptions; context: tls.SecureContext } | null = null;

/**
 * The TLS context of streams opened with `t`'s key, certificate, CA and revocation list: built
 * once and reused while they stay the same (parsing them cost each stream ~2 ms of the agent's
 * CPU); a new revocation list (or identity) builds a new one.
 */
export function clientSecureContext(t: ClientTlsOptions): tls.SecureContext {
  const last = lastContext;
  if (
    last &&
    last.from.key === t.key &&
    last.from.cert === t.cert &&
    last.from.ca === t.ca &&
    last.from.crl === t.crl
  ) {
    return last.context;
  }
  const context = tls.createSecureContext({
    key: t.key,
    cert: t.cert,
    ca: t.ca,
    minVersion: 'TLSv1.2',
    ...(t.crl !== undefined ? { crl: t.crl } : {}),
  });
  lastContext = { from: { ...t }, context };
  return context;
}

/** Files a directory's sending opens ahead of the one it sends. */
const OPEN_AHEAD = 8;

/**
 * Files up to this size (most of an image set: CRIU's small images) are read whole on the
 * calling thread, and a directory's frames for them leave in one socket write per
 * `CORK_FLUSH_BYTES`: each asynchronous open, stat, read and close costs two thread hand-offs
 * through libuv's pool and each frame its own TLS record and system call, which for ~45 small
 * files was a tenth of each agent's CPU per move (docs/PERFORMANCE.md, _Bottlenecks found and
 * fixed_, 15).
 */
export const SMALL_FILE_BYTES = 256 * 1024;
/** Frames of small files held back (socket corked) until this many bytes wait. */
const CORK_FLUSH_BYTES = 256 * 1024;

/** A file opened for sending. */
interface OpenedFile {
  /** null: a small file, read whole into `first` and closed already. */
  handle: FileHandle | null;
  size: number;
  mode: number;
  /** Its first chunk, being read (null: empty). */
  first: Promise<{ frame: Buffer; n: number }> | null;
}

/** Interval of the sender's keepalive PINGs while its stream waits for data. */
const KEEPALIVE_MS = 1000;

/** The sending end of one migration's stream. Methods must be called one at a time. */
export class StreamClient {
  private meter: ProgressMeter;
  private readonly idleMs: number;
  private readonly faults: TransferFaults;
  private readonly chunkBytes: number;
  private readonly onProgress: ProgressCallback | undefined;
  /** When the first file started (a stream opened ahead of its data counts from there). */
  private started = 0;
  private dataFrames = 0;
  private dataBytes = 0;
  private busy = false;
  private finished = false;

  private constructor(
    private readonly channel: FrameChannel,
    options: StreamClientOptions,
  ) {
    this.onProgress = options.onProgress;
    this.meter = new ProgressMeter(options.onProgress);
    this.idleMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.faults = options.faults ?? {};
    const rate = this.faults.throttleBytesPerSec;
    this.chunkBytes = rate
      ? Math.max(1, Math.min(DATA_CHUNK_BYTES, Math.floor(rate / 10)))
      : DATA_CHUNK_BYTES;
  }

  /**
   * Connect, send HELLO and wait for ACCEPT. Rejects with a TransferError: `link`/`timeout`
   * (UNAVAILABLE, retryable), `auth` for a refused TLS certificate, or `remote` with
   * `details.remoteKind` 'auth' when the receiver refused the token.
   */
  static async connect(options: StreamClientOptions): Promise<StreamClient> {
    const logger = (options.logger ?? nullLogger).child({
      component: 'transfer',
      migrationId: options.migrationId,
    });
    const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const t = options.tls;
    const socket = t
      ? tls.connect({
          host: options.host,
          port: options.port,
          secureContext: clientSecureContext(t),
          checkServerIdentity: (_host, cert) => serverIdentityProblem(cert, t.peer),
        })
      : net.connect({ host: options.host, port: options.port });
    const channel = new FrameChannel(socket, logger);
    try {
      await channel.waitFor(t ? 'secureConnect' : 'connect', timeoutMs, 'the connection');
      await channel.sendJson(
        'HELLO',
        {
          migrationId: options.migrationId,
          token: options.token,
          version: TRANSFER_PROTOCOL_VERSION,
        },
        timeoutMs,
      );
      const frame = await channel.next(timeoutMs, 'ACCEPT');
      if (frame.type !== 'ACCEPT') throw protocolError(frame, 'expected ACCEPT');
      parseJsonFrame(frame, acceptSchema);
    } catch (err) {
      const winner = channel.fail(asStreamError(err), true);
      channel.destroy();
      throw winner;
    }
    logger.debug('transfer accepted', { peer: channel.peer });
    return new StreamClient(channel, options);
  }

  /** Totals sent so far. */
  get progress(): TransferProgress {
    return this.meter.snapshot();
  }

  /**
   * Stream the regular file at `path` as `name` (default: its base name) in ≤ 1 MiB DATA frames,
   * waiting for `drain` whenever the socket buffer is full. Rejects with the stream's first error
   * (e.g. the receiver's ERROR), which also ends the stream.
   */
  async sendFile(path: string, name: string = basename(path)): Promise<void> {
    const opened = this.openForSend(path);
    opened.catch(() => undefined); // awaited in sendOpened
    await this.sendOpened(path, name, opened, true);
  }

  /** Open `path` for sending: its handle, its size and mode, its first chunk being read. */
  private async openForSend(path: string): Promise<OpenedFile> {
    const small = this.readSmall(path);
    if (small) return small;
    const handle = await open(path, 'r');
    try {
      const st = await handle.stat();
      if (!st.isFile()) throw new DroverError(ErrorCode.InvalidArgument, `${path}: not a file`);
      const first = st.size > 0 ? this.readChunk(handle, path, st.size, 0) : null;
      first?.catch(() => undefined); // awaited in sendOpened
      return { handle, size: st.size, mode: st.mode & 0o7777, first };
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw err;
    }
  }

  /**
   * A small file (one DATA frame, at most `SMALL_FILE_BYTES`) read whole, synchronously, into
   * its frame; null for a larger one (opened again asynchronously).
   */
  private readSmall(path: string): OpenedFile | null {
    const fd = openSync(path, 'r');
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new DroverError(ErrorCode.InvalidArgument, `${path}: not a file`);
      if (st.size > Math.min(SMALL_FILE_BYTES, this.chunkBytes)) return null;
      const mode = st.mode & 0o7777;
      if (st.size === 0) return { handle: null, size: 0, mode, first: null };
      const frame = allocFrame(st.size);
      let n = 0;
      while (n < st.size) {
        const got = readSync(fd, frame, FRAME_HEADER_BYTES + n, st.size - n, n);
        if (got === 0) {
          throw new DroverError(ErrorCode.FailedPrecondition, `${path} shrank while being sent`);
        }
        n += got;
      }
      return { handle: null, size: st.size, mode, first: Promise.resolve({ frame, n }) };
    } finally {
      closeSync(fd);
    }
  }

  /** One chunk of a file, read straight into its frame's payload (no copy). */
  private async readChunk(
    handle: FileHandle,
    path: string,
    size: number,
    position: number,
  ): Promise<{ frame: Buffer; n: number }> {
    const want = Math.min(this.chunkBytes, size - position);
    const frame = allocFrame(want);
    const { bytesRead } = await handle.read(frame, FRAME_HEADER_BYTES, want, position);
    if (bytesRead === 0) {
      throw new DroverError(ErrorCode.FailedPrecondition, `${path} shrank while being sent`);
    }
    return { frame: frame.subarray(0, FRAME_HEADER_BYTES + bytesRead), n: bytesRead };
  }

  /** Send one opened file; the `last` of a call reports progress whatever the interval. */
  private async sendOpened(
    path: string,
    name: string,
    opened: Promise<OpenedFile>,
    last: boolean,
  ): Promise<void> {
    this.enter('sendFile');
    if (this.started === 0) {
      this.started = performance.now();
      this.meter = new ProgressMeter(this.onProgress);
    }
    let f: OpenedFile | null = null;
    try {
      const problem = fileNameProblem(name);
      if (problem) throw new DroverError(ErrorCode.InvalidArgument, problem);
      f = await opened;
      const { handle, size } = f;
      await this.channel.sendJson('FILE', { name, size, mode: f.mode }, this.idleMs);
      const hash = createHash('sha256');
      // The next chunk is read while this one is hashed and sent: file reads overlap the
      // socket's work.
      let position = 0;
      let next = f.first;
      while (next) {
        const { frame, n } = await next;
        position += n;
        next = position < size && handle ? this.readChunk(handle, path, size, position) : null;
        // Settled on the next turn; if sending fails first, close() waits for it.
        next?.catch(() => undefined);
        hash.update(frame.subarray(FRAME_HEADER_BYTES));
        await this.sendData(frame);
        this.meter.addBytes(n);
      }
      await this.channel.sendJson('FILE_END', { sha256: hash.digest('hex') }, this.idleMs);
      this.meter.fileDone(last);
    } catch (err) {
      throw this.channel.fail(asStreamError(err), true);
    } finally {
      // Not waited for: nothing of the file is needed any more (a failure's close waits for
      // a read still in flight by itself).
      if (f) void f.handle?.close().catch(() => undefined);
      else void opened.then((o) => o.handle?.close()).catch(() => undefined);
      this.busy = false;
    }
  }

  /** Send every regular file directly in `dir`, sorted by name (no recursion). */
  async sendDirectory(dir: string): Promise<TransferProgress> {
    const entries = await readdir(dir, { withFileTypes: true }).catch((err: unknown) => {
      throw this.channel.fail(asStreamError(err), true);
    });
    const names = entries.filter((e) => e.isFile()).map((e) => e.name);
    names.sort();
    // The next few files are opened (and their first chunk read) while one is sent: an image
    // set is mostly small files, and each would otherwise wait for its own file-system calls.
    // Small files are read at once, and their frames go out together (corked).
    const ahead: Promise<OpenedFile>[] = [];
    const openAt = (i: number): void => {
      const p = this.openForSend(join(dir, names[i]!));
      p.catch(() => undefined); // awaited in sendOpened
      ahead.push(p);
    };
    for (let i = 0; i < Math.min(OPEN_AHEAD, names.length); i++) openAt(i);
    try {
      for (let i = 0; i < names.length; i++) {
        const opened = ahead.shift()!;
        if (i + OPEN_AHEAD < names.length) openAt(i + OPEN_AHEAD);
        // Not while paced (test-only): a paced stream's frames leave one by one.
        const small =
          !this.faults.throttleBytesPerSec && (await opened.catch(() => null))?.handle === null;
        if (!small || this.channel.queuedBytes >= CORK_FLUSH_BYTES) this.channel.flush();
        if (small) this.channel.cork();
        await this.sendOpened(join(dir, names[i]!), names[i]!, opened, i === names.length - 1);
      }
    } finally {
      this.channel.flush();
      // Opened ahead and never sent (the stream failed): closed.
      for (const p of ahead.splice(0)) void p.then((o) => o.handle?.close()).catch(() => undefined);
    }
    return this.progress;
  }

  /**
   * Send DONE with the totals and wait for the receiver's answer: resolves with RESULT's value,
   * rejects with its ERROR (kind 'remote', the receiver's code) or the stream's first error.
   * Tolerates any length of restore as long as the receiver PINGs (see `StreamReceiver.keepAlive`).
   */
  async finish<T = unknown>(): Promise<T> {
    this.enter('finish');
    this.finished = true;
    try {
      const totals: Totals = { files: this.meter.files, bytes: this.meter.bytes };
      await this.channel.sendJson('DONE', totals, this.idleMs);
      const frame = await this.channel.next(this.idleMs, 'RESULT');
      if (frame.type !== 'RESULT') throw protocolError(frame, 'expected RESULT');
      const result = parseJsonFrame(frame, json()) as T;
      this.channel.close();
      return result;
    } catch (err) {
      throw this.channel.fail(asStreamError(err), true);
    } finally {
      this.busy = false;
    }
  }

  /**
   * A stream opened ahead of its data (a migration connects before it freezes the job): PING
   * every `intervalMs` until `work` settles, so the receiver's idle timeout does not fire;
   * returns `work`'s outcome. PINGs stop once the stream has failed or finished.
   */
  keepAlive<T>(work: Promise<T>, intervalMs = KEEPALIVE_MS): Promise<T> {
    return this.channel.pingWhile(work, intervalMs, () => this.finished || this.busy);
  }

  /** Tell the receiver the transfer is abandoned (ERROR frame with `err`) and close. */
  async abort(err: unknown): Promise<void> {
    this.finished = true;
    this.channel.fail(toDroverError(err), true);
    await this.channel.closed;
  }

  /** Destroy the connection at once (no ERROR frame); for cleanup paths. */
  close(): void {
    this.channel.destroy();
  }

  /** Resolves when the socket has closed. */
  get closed(): Promise<void> {
    return this.channel.closed;
  }

  private enter(op: string): void {
    const failure = this.channel.failure;
    if (failure) throw failure;
    if (this.busy)
      throw new DroverError(ErrorCode.FailedPrecondition, `${op}: another call is in progress`);
    if (this.finished)
      throw new DroverError(ErrorCode.FailedPrecondition, `${op}: stream already finished`);
    this.busy = true;
  }

  /**
   * One DATA frame (from `allocFrame`, payload filled in): sealed with its CRC32, then written,
   * with the test-only faults applied when configured.
   */
  private async sendData(frame: Buffer): Promise<void> {
    const index = this.dataFrames++;
    const length = frame.length - FRAME_HEADER_BYTES;
    sealFrame(frame, 'DATA');
    if (this.faults.corruptFrameAt === index) {
      frame[FRAME_HEADER_BYTES + (length >> 1)]! ^= 0xff;
    }
    const cut = this.faults.truncateAfterBytes;
    if (cut !== undefined && this.dataBytes + length > cut) {
      this.channel.writeRaw(frame.subarray(0, FRAME_HEADER_BYTES + (cut - this.dataBytes)));
      const err = new TransferError(`fault injection: stream cut after ${cut} payload bytes`, {
        kind: 'truncated',
        frame: 'DATA',
        offset: this.channel.bytesSent,
      });
      throw this.channel.fail(err, false); // no ERROR frame: the receiver must see a cut stream
    }
    this.dataBytes += length;
    await this.channel.writeEncoded(frame, this.idleMs);
    const rate = this.faults.throttleBytesPerSec;
    if (rate) {
      const ahead = this.started + (this.dataBytes / rate) * 1000 - performance.now();
      if (ahead > 0) await sleep(ahead);
    }
  }
}
