/**
 * Self-checkpoint: the per-job UNIX socket through which a process asks the agent to checkpoint
 * its own job while it keeps running, and the client function that makes that one call.
 *
 * Protocol (one request per connection):
 * 1. The client connects to `<jobDir>/drover.sock` (SOCK_STREAM) and sends one JSON line
 *    `{"op":"checkpoint","requestId":"<random>","leaveRunning":true}`. Exactly these three fields;
 *    `leaveRunning` must be `true` (a process cannot ask to be stopped by its own checkpoint).
 * 2. The server validates the line (at most 4 KiB, strict fields) and replies with one JSON line:
 *    `{"accepted":true,"requestId":...}`, or `{"accepted":false,"failure":Failure}` and closes.
 *    After accepting, it waits for the client to close its end, and only then runs the checkpoint.
 *    Why: a process holding a UNIX socket connected to a peer outside the dumped tree (the agent)
 *    cannot be dumped without `--ext-unix-sk`, and such an image could not be restored later
 *    anyway. The client must close(2) its socket, not just shutdown(2) it: the server cannot tell
 *    the two apart, and a half-closed socket still makes the dump fail.
 * 3. The result, `{"requestId","ok":true,"image":ImageInfo}` or `{"requestId","ok":false,
 *    "failure":Failure}`, is written atomically (tmp + rename) to
 *    `<jobDir>/self-checkpoint/<requestId>.json`; the client polls for that file. The client is
 *    itself inside the image, caught mid-poll: a restored client finds the same file (if the job
 *    directory came along) and returns the same ImageInfo. So results are never deleted on read;
 *    they go away with the job directory.
 *
 * Who may call: Node cannot read SO_PEERCRED, so the caller is not identified. The socket is
 * created mode 0600 (bound in a private 0700 directory, then renamed into place) in the job's own
 * directory, so only the job and root reach it; all a caller can do is checkpoint this one job,
 * leaving it running, one checkpoint at a time.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DroverError, ErrorCode, nullLogger, type Logger } from '@drover/common';
import { errorToFailure, failureToError, isFailure } from '@drover/protocol';
import type { Failure, ImageInfo } from '@drover/protocol';
import { writeAtomicNoFollow } from './job-dir-fs.js';

/** The socket's name inside the job directory. */
export const SELF_CHECKPOINT_SOCKET = 'drover.sock';
/** The directory (inside the job directory) holding one result file per request. */
export const SELF_CHECKPOINT_RESULTS = 'self-checkpoint';
/** Largest request or reply line, newline included. */
export const MAX_LINE_BYTES = 4096;

const REQUEST_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
const REQUEST_FIELDS = 'leaveRunning,op,requestId';
/** Idle limit for a connection: to send the request, and to close after the accept. */
const CONNECTION_TIMEOUT_MS = 5_000;
const POLL_MS = 20;
const DEFAULT_TIMEOUT_MS = 60_000;
/** sun_path holds 108 bytes with the terminating NUL. */
const MAX_SOCKET_PATH = 107;

/** The one request a client sends. */
export interface SelfCheckpointRequest {
  op: 'checkpoint';
  requestId: string;
  leaveRunning: true;
}

/** The server's one reply line. */
export type SelfCheckpointReply =
  { accepted: true; requestId: string } | { accepted: false; requestId?: string; failure: Failure };

/** The result file's content. */
export type SelfCheckpointResult =
  | { requestId: string; ok: true; image: ImageInfo }
  | { requestId: string; ok: false; failure: Failure };

/** Options for {@link SelfCheckpointServer.listen}. */
export interface SelfCheckpointServerOptions {
  jobId: string;
  /** The job's directory: holds the socket and the results directory. */
  jobDir: string;
  /** Checkpoint the job, leaving it running. Called only after the caller has closed its end. */
  checkpoint: () => Promise<ImageInfo>;
  logger?: Logger;
}

const invalid = (message: string): DroverError =>
  new DroverError(ErrorCode.InvalidArgument, message);

/** Validate one request line (without its newline); throws INVALID_ARGUMENT. */
export function parseSelfCheckpointRequest(line: string): SelfCheckpointRequest {
  const r = jsonObject(line);
  if (!r) throw invalid('request is not a JSON object');
  if (Object.keys(r).sort().join(',') !== REQUEST_FIELDS) {
    throw invalid(`request must have exactly the fields ${REQUEST_FIELDS}`);
  }
  if (r.op !== 'checkpoint') throw invalid(`unknown op: ${String(r.op)}`);
  if (typeof r.requestId !== 'string' || !REQUEST_ID_RE.test(r.requestId)) {
    throw invalid('requestId must be 1-64 characters of [A-Za-z0-9_-]');
  }
  if (r.leaveRunning !== true) throw invalid('a self-checkpoint must leave the job running');
  return { op: 'checkpoint', requestId: r.requestId, leaveRunning: true };
}

/** The agent side: listens on `<jobDir>/drover.sock` and runs one checkpoint at a time. */
export class SelfCheckpointServer {
  readonly socketPath: string;
  private readonly log: Logger;
  private readonly sockets = new Set<Socket>();
  private readonly timedOut = new WeakSet<Socket>();
  /** The request being served, from its accept until its result is written. */
  private busy: string | null = null;
  private running: Promise<void> = Promise.resolve();
  private closing = false;

  private constructor(
    private readonly opts: SelfCheckpointServerOptions,
    private readonly server: Server,
    private readonly ino: number,
  ) {
    this.socketPath = join(opts.jobDir, SELF_CHECKPOINT_SOCKET);
    this.log = (opts.logger ?? nullLogger).child({ component: 'self-checkpoint', job: opts.jobId });
    server.on('connection', (sock) => this.onConnection(sock));
  }

  /** Create the results directory, replace a stale socket and start listening. */
  static async listen(opts: SelfCheckpointServerOptions): Promise<SelfCheckpointServer> {
    const socketPath = join(opts.jobDir, SELF_CHECKPOINT_SOCKET);
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
      throw invalid(`socket path longer than ${MAX_SOCKET_PATH} bytes: ${socketPath}`);
    }
    await fs.mkdir(join(opts.jobDir, SELF_CHECKPOINT_RESULTS), { recursive: true, mode: 0o700 });
    if ((await fs.lstat(socketPath).catch(() => null))?.isSocket() === false) {
      throw new DroverError(ErrorCode.AlreadyExists, `${socketPath} exists and is not a socket`);
    }
    // Bind inside a fresh 0700 directory, chmod, then rename into place: the socket is never
    // reachable with looser permissions, and the rename replaces a stale socket atomically.
    const privateDir = await fs.mkdtemp(join(opts.jobDir, '.sock-'));
    const tmpPath = join(privateDir, 's');
    const server = createServer();
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(tmpPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
      await fs.chmod(tmpPath, 0o600);
      await fs.rename(tmpPath, socketPath);
      return new SelfCheckpointServer(opts, server, (await fs.lstat(socketPath)).ino);
    } catch (cause) {
      server.close();
      throw new DroverError(ErrorCode.Unavailable, `cannot listen on ${socketPath}`, { cause });
    } finally {
      await fs.rm(privateDir, { recursive: true, force: true });
    }
  }

  /** Stop listening, drop open connections, wait for a running checkpoint, remove the socket. */
  async close(): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const sock of this.sockets) sock.destroy();
    await closed;
    await this.running;
    const st = await fs.lstat(this.socketPath).catch(() => null);
    if (st?.ino === this.ino) await fs.unlink(this.socketPath).catch(() => undefined);
  }

  private onConnection(sock: Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', (err) => this.log.debug('connection error', { err }));
    sock.setTimeout(CONNECTION_TIMEOUT_MS, () => {
      this.timedOut.add(sock);
      sock.destroy();
    });
    readLine(sock, (line) => {
      if (line instanceof DroverError) this.refuse(sock, line);
      else this.onRequest(sock, line);
    });
  }

  private onRequest(sock: Socket, line: string): void {
    let requestId: string;
    try {
      ({ requestId } = parseSelfCheckpointRequest(line));
    } catch (err) {
      return this.refuse(sock, err);
    }
    if (this.closing) {
      const err = new DroverError(ErrorCode.Unavailable, 'the job socket is closing', {
        retryable: true,
      });
      return this.refuse(sock, err, requestId);
    }
    if (this.busy !== null) {
      const msg = `job ${this.opts.jobId} is already self-checkpointing`;
      const details = { busyWith: this.busy };
      const err = new DroverError(ErrorCode.CgroupBusy, msg, { retryable: true, details });
      return this.refuse(sock, err, requestId);
    }
    // Check-and-set with no await in between: a second connection cannot slip in.
    this.busy = requestId;
    // Why wait for 'close': the caller's socket to us must be gone before CRIU looks at it.
    sock.once('close', () => {
      const abort = this.timedOut.has(sock)
        ? new DroverError(ErrorCode.Timeout, 'the client kept its connection open after the accept')
        : this.closing
          ? new DroverError(ErrorCode.Unavailable, 'the job socket closed', { retryable: true })
          : null;
      this.running = this.serve(requestId, abort);
    });
    this.log.info('self-checkpoint accepted', { requestId });
    sock.write(JSON.stringify({ accepted: true, requestId } satisfies SelfCheckpointReply) + '\n');
  }

  private async serve(requestId: string, abort: DroverError | null): Promise<void> {
    let result: SelfCheckpointResult;
    try {
      if (abort) throw abort;
      const image = await this.opts.checkpoint();
      result = { requestId, ok: true, image };
      this.log.info('self-checkpoint done', { requestId, imageId: image.imageId });
    } catch (err) {
      result = { requestId, ok: false, failure: errorToFailure(err) };
      this.log.warn('self-checkpoint failed', { requestId, err });
    }
    const path = join(this.opts.jobDir, SELF_CHECKPOINT_RESULTS, `${requestId}.json`);
    try {
      // The results directory is the job's to write: never write through a planted symlink.
      await writeAtomicNoFollow(path, JSON.stringify(result) + '\n');
    } catch (err) {
      this.log.error('cannot write the self-checkpoint result', { requestId, err });
    } finally {
      this.busy = null;
    }
  }

  private refuse(sock: Socket, err: unknown, requestId?: string): void {
    const failure = errorToFailure(err);
    this.log.info('self-checkpoint refused', {
      requestId,
      code: failure.code,
      why: failure.message,
    });
    const reply: SelfCheckpointReply = {
      accepted: false,
      ...(requestId && { requestId }),
      failure,
    };
    sock.end(JSON.stringify(reply) + '\n');
  }
}

/**
 * Ask the agent to checkpoint the job this process runs in, leaving it running. Resolves with the
 * image once it is written; throws a DroverError with the server's failure code, UNAVAILABLE when
 * no agent listens, or TIMEOUT. The deadline uses the monotonic clock, which a CRIU restore keeps
 * continuous (time namespace).
 */
export async function requestSelfCheckpoint(
  jobDir: string,
  options: { timeoutMs?: number } = {},
): Promise<ImageInfo> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(timeoutMs > 0)) throw invalid(`timeoutMs must be positive: ${timeoutMs}`);
  const deadline = performance.now() + timeoutMs;
  const requestId = randomBytes(12).toString('hex');
  const request: SelfCheckpointRequest = { op: 'checkpoint', requestId, leaveRunning: true };
  const reply = await exchange(join(jobDir, SELF_CHECKPOINT_SOCKET), request, timeoutMs);
  if (!reply.accepted) throw failureToError(reply.failure);
  const path = join(jobDir, SELF_CHECKPOINT_RESULTS, `${requestId}.json`);
  for (;;) {
    const text = await fs.readFile(path, 'utf8').catch((cause: NodeJS.ErrnoException) => {
      if (cause.code === 'ENOENT') return null;
      throw new DroverError(ErrorCode.Internal, `cannot read ${path}`, { cause });
    });
    if (text !== null) return parseResult(text, requestId);
    if (performance.now() >= deadline) {
      const msg = `no self-checkpoint result after ${timeoutMs} ms`;
      const details = { requestId, path };
      throw new DroverError(ErrorCode.Timeout, msg, { retryable: true, details });
    }
    await sleep(POLL_MS);
  }
}

/** Send the request, read the one reply line, and close the socket before returning. */
function exchange(
  socketPath: string,
  request: SelfCheckpointRequest,
  timeoutMs: number,
): Promise<SelfCheckpointReply> {
  return new Promise((resolve, reject) => {
    const fail = (code: ErrorCode, msg: string, cause?: Error): void => {
      sock.destroy();
      reject(new DroverError(code, `${msg} (${socketPath})`, { retryable: true, cause }));
    };
    const sock = createConnection(socketPath, () => sock.write(JSON.stringify(request) + '\n'));
    sock.setTimeout(Math.min(timeoutMs, CONNECTION_TIMEOUT_MS), () =>
      fail(ErrorCode.Timeout, 'the agent did not reply'),
    );
    sock.on('error', (err) => fail(ErrorCode.Unavailable, `no agent: ${err.message}`, err));
    sock.on('end', () => fail(ErrorCode.Unavailable, 'the agent closed without a reply'));
    readLine(sock, (line) => {
      // destroy() closes the fd at once; the server starts the dump only after that.
      sock.destroy();
      try {
        resolve(parseReply(typeof line === 'string' ? line : '', request.requestId));
      } catch (err) {
        reject(err);
      }
    });
  });
}

/** Call `onLine` once with the first line on `sock`, or an error if it is too long or followed by more. */
function readLine(sock: Socket, onLine: (line: string | DroverError) => void): void {
  let buf = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    buf = Buffer.concat([buf, chunk]);
    const nl = buf.indexOf(0x0a);
    if (nl < 0 && buf.length < MAX_LINE_BYTES) return;
    sock.off('data', onData).on('data', () => undefined); // keep reading, so that EOF is seen
    if (nl < 0 || nl >= MAX_LINE_BYTES) onLine(invalid(`line exceeds ${MAX_LINE_BYTES} bytes`));
    else if (nl + 1 < buf.length) onLine(invalid('data after the request line'));
    else onLine(buf.subarray(0, nl).toString('utf8'));
  };
  sock.on('data', onData);
}

function jsonObject(text: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}

function parseReply(line: string, requestId: string): SelfCheckpointReply {
  const r = jsonObject(line) ?? {};
  if (r.accepted === true && r.requestId === requestId) return { accepted: true, requestId };
  if (r.accepted === false && isFailure(r.failure)) return { accepted: false, failure: r.failure };
  const msg = `malformed self-checkpoint reply: ${line.slice(0, 200)}`;
  throw new DroverError(ErrorCode.Internal, msg);
}

function parseResult(text: string, requestId: string): ImageInfo {
  const r = jsonObject(text) ?? {};
  if (
    r.requestId === requestId &&
    r.ok === true &&
    typeof r.image === 'object' &&
    r.image !== null
  ) {
    return r.image as ImageInfo;
  }
  if (r.requestId === requestId && r.ok === false && isFailure(r.failure)) {
    throw failureToError(r.failure);
  }
  throw new DroverError(ErrorCode.Internal, `malformed self-checkpoint result for ${requestId}`);
}
