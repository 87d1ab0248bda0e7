/**
 * One `criu swrk` service process and the SEQPACKET conversation with it: requests out,
 * NOTIFY callbacks answered through hooks, the final response back.
 */
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { nullLogger, type Logger } from '@drover/common';
import {
  closeFd,
  recvmsg,
  sendmsg,
  setNonBlocking,
  socketpairSeqpacket,
  spawnDirect,
  watchReadable,
  type DirectChild,
} from '@drover/native';
import { CriuError } from './errors.js';
import {
  decodeResponse,
  encodeRequest,
  ReqType,
  reqTypeName,
  type RpcRequest,
  type RpcResponse,
} from './rpc-schema.js';

/** The NOTIFY callbacks CRIU makes during DUMP, PRE_DUMP and RESTORE. */
export const NotifyScript = [
  'pre-dump',
  'post-dump',
  'query-ext-files',
  'status-ready',
  'network-lock',
  'network-unlock',
  'pre-restore',
  'setup-namespaces',
  'post-setup-namespaces',
  'post-restore',
  'pre-resume',
  'post-resume',
  'orphan-pts-master',
] as const;
export type NotifyScript = (typeof NotifyScript)[number];

/** Async hooks run at CRIU's NOTIFY points. Throwing aborts the CRIU operation. */
export type CriuHooks = Partial<Record<NotifyScript, (event: { pid?: number }) => unknown>>;

/** How to start one swrk. */
export interface SwrkOptions {
  /** Path of the criu binary. */
  criuPath: string;
  /** Directory handed to CRIU as its fd 4 (the images dir). */
  imagesDir?: string;
  /** Command prefix to run swrk in other namespaces, e.g. `['nsenter', '-t', '123', '-p']`. */
  wrapper?: readonly string[];
  /** Further fds for the child, placed at fd 5, 6, ... in order. */
  extraFds?: readonly number[];
  /** The child's environment (default: the agent's own). */
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
}

/** The fd number CRIU sees the images directory at. */
export const IMAGES_DIR_CHILD_FD = 4;
/** The child fd number of `extraFds[0]`. */
export const FIRST_EXTRA_CHILD_FD = 5;

const RECV_MAX = 64 * 1024;
const STDERR_KEEP = 8 * 1024;

/** A running `criu swrk`. One DUMP/RESTORE/PAGE_SERVER per session (CRIU's rule). */
export class SwrkSession {
  private readonly queue: RpcResponse[] = [];
  private waiter: { resolve: (r: RpcResponse) => void; reject: (e: Error) => void } | null = null;
  private closedError: Error | null = null;
  private stderr = '';
  private readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly watch: { stop(): void };
  private fdOpen = true;

  private constructor(
    private readonly fd: number,
    private readonly child: DirectChild,
    private readonly log: Logger,
  ) {
    this.exited = child.exited.then((s) => ({ code: s.exitCode, signal: s.signal }));
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-STDERR_KEEP);
    });
    setNonBlocking(fd, true);
    this.watch = watchReadable(fd, () => this.drain());
  }

  /** Start `criu swrk 3` with one end of a fresh socketpair as its fd 3. */
  static start(options: SwrkOptions): SwrkSession {
    const log = (options.logger ?? nullLogger).child({ component: 'criu-swrk' });
    const [mine, theirs] = socketpairSeqpacket();
    let dirFd: number | null = null;
    try {
      if (options.imagesDir !== undefined) {
        dirFd = openSync(options.imagesDir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
      }
      const argv = [...(options.wrapper ?? []), options.criuPath, 'swrk', '3'];
      // Started without forking the agent (spawnDirect): the agent is large, and a fork of it
      // costs it 10–20 ms of CPU per CRIU operation.
      const child = spawnDirect(argv[0]!, argv.slice(1), {
        stdout: 'ignore',
        extraFds: [theirs, dirFd, ...(options.extraFds ?? [])],
        ...(options.env ? { env: options.env } : {}),
      });
      log.debug('started criu swrk', { pid: child.pid, argv });
      return new SwrkSession(mine, child, log);
    } catch (err) {
      closeFd(mine);
      throw err;
    } finally {
      // The child has its copies; ours must go or EOF never comes when CRIU exits.
      closeFd(theirs);
      if (dirFd !== null) closeSync(dirFd);
    }
  }

  /** PID of the swrk process (or of its wrapper). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Whether it can still take a request: running, its socket open. */
  get alive(): boolean {
    return this.fdOpen && this.child.exitStatus === null;
  }

  /**
   * Send one request and wait for its response, answering NOTIFY callbacks with `hooks` on the
   * way. A hook that throws makes CRIU abort; that hook's error is the one thrown.
   */
  async call(req: RpcRequest, hooks: CriuHooks = {}): Promise<RpcResponse> {
    const name = reqTypeName(req.type);
    this.send(req);
    let hookError: unknown = null;
    for (;;) {
      const resp = await this.next(name);
      if (resp.type !== ReqType.NOTIFY) {
        if (hookError !== null) throw hookError;
        return resp;
      }
      const script = resp.notify?.script ?? '';
      let ok = true;
      const hook = hooks[script as NotifyScript];
      if (hook && hookError === null) {
        try {
          await hook(resp.notify?.pid === undefined ? {} : { pid: resp.notify.pid });
        } catch (err) {
          ok = false;
          hookError = err;
          this.log.warn('hook failed; CRIU will abort', { script, err });
        }
      }
      this.log.debug('notify', { script, pid: resp.notify?.pid, ok });
      this.send({ type: ReqType.NOTIFY, notify_success: ok });
    }
  }

  /** Close our end and wait for the process to exit. Safe to call more than once. */
  async close(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.shutdown(new Error('session closed'));
    return this.exited;
  }

  /** Kill the swrk process (SIGKILL, by its PID) and close. */
  async kill(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.close();
  }

  /** What CRIU printed on stderr (the last few KiB). */
  get stderrText(): string {
    return this.stderr;
  }

  private send(req: RpcRequest): void {
    if (this.closedError) throw this.closedError;
    sendmsg(this.fd, encodeRequest(req));
  }

  private next(request: string): Promise<RpcResponse> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.closedError) {
      return Promise.reject(this.exitError(request));
    }
    return new Promise((resolve, reject) => {
      this.waiter = {
        resolve,
        reject: () => reject(this.exitError(request)),
      };
    });
  }

  private exitError(request: string): CriuError {
    const stderr = this.stderr.trim().split('\n').filter(Boolean).slice(-10);
    return new CriuError('criu swrk closed the connection before answering', {
      request,
      logTail: stderr,
    });
  }

  private drain(): void {
    if (!this.fdOpen) return;
    for (;;) {
      let got;
      try {
        got = recvmsg(this.fd, RECV_MAX, 0);
      } catch (err) {
        this.shutdown(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      if (got === null) return;
      if (got.eof) {
        this.shutdown(new Error('criu swrk closed its socket'));
        return;
      }
      let resp: RpcResponse;
      try {
        resp = decodeResponse(got.data);
      } catch (err) {
        this.log.error('undecodable message from criu', { err });
        continue;
      }
      const w = this.waiter;
      if (w) {
        this.waiter = null;
        w.resolve(resp);
      } else {
        this.queue.push(resp);
      }
    }
  }

  private shutdown(reason: Error): void {
    if (!this.fdOpen) return;
    this.fdOpen = false;
    this.closedError = reason;
    this.watch.stop();
    closeFd(this.fd);
    const w = this.waiter;
    this.waiter = null;
    // Let CRIU's last stderr lines arrive before reporting (they explain the close).
    if (w) void this.exited.then(() => w.reject(reason));
  }
}
