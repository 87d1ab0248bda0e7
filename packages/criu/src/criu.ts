/** The CRIU engine: VERSION, CHECK, FEATURE_CHECK, DUMP, PRE_DUMP, RESTORE and PAGE_SERVER over RPC. */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { DroverError, ErrorCode, nullLogger, type Logger } from '@drover/common';
import { childrenOf, procEntry, type ProcEntry } from '@drover/native';
import { CriuError, isRealErrorLine } from './errors.js';
import {
  compileDumpOptions,
  compilePageServerOptions,
  compileRestoreOptions,
  pageServerEnv,
  type DumpOptions,
  type PageServerOptions,
  type RestoreOptions,
} from './options.js';
import { ReqType, reqTypeName, type RpcRequest, type RpcResponse } from './rpc-schema.js';
import { SwrkSession, type CriuHooks } from './swrk.js';
import { WarmSwrk, type WarmSwrkOptions } from './warm-swrk.js';

/** CRIU's version as VERSION reports it. */
export interface CriuVersion {
  major: number;
  minor: number;
  sublevel: number;
  gitid?: string;
  /** `major.minor.sublevel`. */
  text: string;
}

/** What this host's CRIU and kernel can do. */
export interface CriuFeatures {
  /** Post-copy (userfaultfd lazy pages). */
  lazyPages: boolean;
  /** Soft-dirty memory tracking: pre-copy iterations. */
  memTrack: boolean;
  pidfdStore: boolean;
}

/** Result of a DUMP. */
export interface DumpResult {
  /** CRIU's log, next to the images. */
  logPath: string;
  durationMs: number;
}

/** Result of a RESTORE. */
export interface RestoreResult {
  /** Host PID of the restored tree's root. */
  pid: number;
  logPath: string;
  durationMs: number;
}

/** A running page server. */
export interface PageServerHandle {
  /** The daemon's PID, our child; null when it could not be found (see {@link findPageServer}). */
  pid: number | null;
  port: number;
}

/** How to reach CRIU. */
export interface CriuOptions {
  /** Path of the criu binary (see `findCriu`). */
  criuPath: string;
  /** Command prefix to run CRIU in other namespaces (e.g. an nsenter into a host). */
  wrapper?: readonly string[];
  logger?: Logger;
}

/** Per-call extras. */
export interface CallOptions {
  hooks?: CriuHooks;
  /** Further fds for CRIU, at child fd 5, 6, ... (e.g. a status fd or inherited fds). */
  extraFds?: readonly number[];
  /** Receives the swrk session once started (to kill it on cancel). */
  onSession?: (session: SwrkSession) => void;
  /** The environment of CRIU's process (default: the agent's own). */
  env?: NodeJS.ProcessEnv;
  /**
   * A session started ahead ({@link Criu.warm}) to run the operation in; it is the operation's
   * from then on (closed at its end, whatever happens). Its CRIU finds the images directory by
   * path. Not with `extraFds` or `env`, which a process gets when it starts: then it is closed
   * and a fresh one started.
   */
  session?: SwrkSession | null;
}

const LOG_TAIL_LINES = 25;

/** Drives CRIU through `criu swrk`, one service process per operation. */
export class Criu {
  private readonly log: Logger;

  constructor(private readonly options: CriuOptions) {
    this.log = (options.logger ?? nullLogger).child({ component: 'criu' });
  }

  /** The criu binary this engine runs. */
  get path(): string {
    return this.options.criuPath;
  }

  /**
   * A stock of `criu swrk` processes of this engine, started ahead of the operations that will
   * take them (`CallOptions.session`); the caller drains it when they are done (warm-swrk.ts).
   */
  warm(options: WarmSwrkOptions = {}): WarmSwrk<SwrkSession> {
    return new WarmSwrk(() => SwrkSession.start({ ...this.base() }), {
      logger: this.log,
      ...options,
    });
  }

  /**
   * A `criu swrk` started now for one operation to come (`CallOptions.session`): a migration
   * starts it before the freeze so the frozen window holds no CRIU start-up. The caller kills it
   * if the operation never runs.
   */
  startSession(): SwrkSession {
    return SwrkSession.start({ ...this.base() });
  }

  /** CRIU's version. */
  async version(): Promise<CriuVersion> {
    const resp = await this.simple({ type: ReqType.VERSION });
    const v = resp.version;
    if (!v) throw new CriuError('VERSION answered without a version', { request: 'VERSION' });
    const sublevel = v.sublevel ?? 0;
    return {
      major: v.major_number,
      minor: v.minor_number,
      sublevel,
      ...(v.gitid ? { gitid: v.gitid } : {}),
      text: `${v.major_number}.${v.minor_number}.${sublevel}`,
    };
  }

  /** `criu check`: throws CriuError when this kernel cannot do what CRIU needs. */
  async check(): Promise<void> {
    await this.simple({ type: ReqType.CHECK });
  }

  /** Which optional features work on this host. */
  async features(): Promise<CriuFeatures> {
    const resp = await this.simple({
      type: ReqType.FEATURE_CHECK,
      features: { mem_track: true, lazy_pages: true, pidfd_store: true },
    });
    const f = resp.features ?? {};
    return {
      lazyPages: f.lazy_pages === true,
      memTrack: f.mem_track === true,
      pidfdStore: f.pidfd_store === true,
    };
  }

  /** Checkpoint the tree rooted at `opts.pid` into `opts.imagesDir`. */
  async dump(opts: DumpOptions, call: CallOptions = {}): Promise<DumpResult> {
    let rpc;
    try {
      rpc = compileDumpOptions(opts);
    } catch (err) {
      await call.session?.kill();
      throw err;
    }
    return this.imagesOp({ type: ReqType.DUMP, opts: rpc }, opts.imagesDir, call);
  }

  /**
   * A pre-dump (memory only, tree keeps running) for iterative pre-copy. Needs soft-dirty
   * memory tracking: refused with FAILED_PRECONDITION where the kernel lacks it, before CRIU runs.
   */
  async preDump(opts: DumpOptions, call: CallOptions = {}): Promise<DumpResult> {
    const features = await this.features();
    if (!features.memTrack) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        'pre-dump needs memory tracking, which this kernel lacks (CONFIG_MEM_SOFT_DIRTY is off)',
        { details: { feature: 'mem_track' } },
      );
    }
    const rpc = compileDumpOptions({ ...opts, trackMem: true }, 'pre-dump.log');
    return this.imagesOp({ type: ReqType.PRE_DUMP, opts: rpc }, opts.imagesDir, call);
  }

  /** Restore the tree in `opts.imagesDir`; resolves with the root's host PID. */
  async restore(opts: RestoreOptions, call: CallOptions = {}): Promise<RestoreResult> {
    const rpc = compileRestoreOptions(opts);
    const t0 = performance.now();
    const resp = await this.run({ type: ReqType.RESTORE, opts: rpc }, opts.imagesDir, call);
    const pid = resp.restore?.pid;
    if (pid === undefined) {
      throw new CriuError('RESTORE answered without a pid', { request: 'RESTORE' });
    }
    return {
      pid,
      logPath: join(opts.imagesDir, rpc.log_file!),
      durationMs: performance.now() - t0,
    };
  }

  /** Start a page server (it runs on as its own daemon process until its peer is done). */
  async pageServer(opts: PageServerOptions, call: CallOptions = {}): Promise<PageServerHandle> {
    const rpc = compilePageServerOptions(opts);
    const resp = await this.run({ type: ReqType.PAGE_SERVER, opts: rpc }, opts.imagesDir, {
      ...call,
      env: pageServerEnv(opts, process.env),
    });
    const said = resp.ps?.pid;
    if (said === undefined) {
      throw new CriuError('PAGE_SERVER answered without a pid', { request: 'PAGE_SERVER' });
    }
    const port = resp.ps?.port ?? opts.port;
    const pid =
      said > 0 ? said : findPageServer(childrenOf(process.pid).map(procEntry), opts.address, port);
    if (pid === null) {
      this.log.warn('cannot find the page server CRIU started among our children', {
        address: opts.address,
        port,
      });
    }
    return { pid, port };
  }

  private async imagesOp(
    req: RpcRequest,
    imagesDir: string,
    call: CallOptions,
  ): Promise<DumpResult> {
    const t0 = performance.now();
    await this.run(req, imagesDir, call);
    return { logPath: join(imagesDir, req.opts!.log_file!), durationMs: performance.now() - t0 };
  }

  private async simple(req: RpcRequest): Promise<RpcResponse> {
    const session = SwrkSession.start({ ...this.base() });
    try {
      const resp = await session.call(req);
      if (!resp.success) throw failure(req, resp, undefined, []);
      return resp;
    } finally {
      await session.close();
    }
  }

  private async run(req: RpcRequest, imagesDir: string, call: CallOptions): Promise<RpcResponse> {
    const name = reqTypeName(req.type);
    const logPath = join(imagesDir, req.opts?.log_file ?? 'criu.log');
    const warm = call.session?.alive && !call.extraFds && !call.env ? call.session : null;
    if (call.session && !warm) await call.session.kill();
    // A warm CRIU started without the directory as its fd 4: it opens it by path.
    if (warm && req.opts) req = { ...req, opts: { ...req.opts, images_dir: resolve(imagesDir) } };
    const session =
      warm ??
      SwrkSession.start({
        ...this.base(),
        imagesDir,
        ...(call.extraFds ? { extraFds: call.extraFds } : {}),
        ...(call.env ? { env: call.env } : {}),
      });
    call.onSession?.(session);
    this.log.info('criu request', {
      request: name,
      imagesDir,
      pid: req.opts?.pid,
      warm: warm !== null,
    });
    let resp: RpcResponse;
    try {
      resp = await session.call(req, call.hooks);
    } catch (err) {
      await session.close();
      if (err instanceof CriuError) {
        const tail = await logTail(logPath);
        throw new CriuError(
          `${name} failed`,
          {
            request: name,
            logPath,
            logTail: tail.length ? tail : err.logTail,
          },
          { cause: err },
        );
      }
      throw err;
    }
    await session.close();
    if (!resp.success) throw failure(req, resp, logPath, await logTail(logPath));
    return resp;
  }

  private base(): { criuPath: string; wrapper?: readonly string[]; logger: Logger } {
    return {
      criuPath: this.options.criuPath,
      ...(this.options.wrapper ? { wrapper: this.options.wrapper } : {}),
      logger: this.log,
    };
  }
}

function failure(
  req: RpcRequest,
  resp: RpcResponse,
  logPath: string | undefined,
  tail: string[],
): CriuError {
  const name = reqTypeName(req.type);
  return new CriuError(`${name} failed`, {
    request: name,
    ...(resp.cr_errno !== undefined ? { criuErrno: resp.cr_errno } : {}),
    ...(resp.cr_errmsg !== undefined ? { criuMessage: resp.cr_errmsg } : {}),
    ...(logPath !== undefined ? { logPath } : {}),
    logTail: tail,
  });
}

/**
 * The last lines of a CRIU log, starting at its first real `Error (` line when that is within
 * reach of the end (a failure's first error explains it; the lines after it show the unwinding).
 */
export async function logTail(path: string, lines = LOG_TAIL_LINES): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return [];
  }
  const all = text.split('\n').filter((l) => l.length > 0);
  const firstError = all.findIndex(isRealErrorLine);
  const from =
    firstError >= 0 ? Math.min(firstError, Math.max(0, all.length - lines)) : all.length - lines;
  return all.slice(Math.max(0, from), Math.max(0, from) + lines);
}

/**
 * The page-server daemon CRIU started for `address`:`port`, among `children` (this process's
 * children as /proc shows them), or null. CRIU 4.2.1 answers PAGE_SERVER with pid 0: in the
 * process that forked the daemon, `cr_page_server` returns 0 rather than the daemon's PID
 * (`criu/page-xfer.c`). That process exits before the answer, so the daemon, an orphan, has
 * been reparented to the nearest child subreaper — the agent, which must reap it (to know its
 * exit, and so that its CPU time counts among the agent's children's). It is known by the
 * title it gives itself: `criu: page-server --rpc --address A --port P`.
 */
export function findPageServer(
  children: readonly (ProcEntry | null)[],
  address: string,
  port: number,
): number | null {
  const title = `page-server --rpc --address ${address} --port ${port}`;
  for (const c of children) {
    if (!c || c.state === 'Z' || c.state === 'X') continue;
    const cmd = c.cmdline.join(' ');
    if (cmd === `criu: ${title}` || cmd.startsWith(`criu: ${title} `)) return c.pid;
  }
  return null;
}
