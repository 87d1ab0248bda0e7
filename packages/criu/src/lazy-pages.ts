/**
 * The post-copy receiver: `criu lazy-pages`, the daemon that serves a lazily restored tree's
 * page faults by fetching pages from the source's page server. CRIU has no RPC request for it,
 * so it runs as a CLI process; readiness comes through `--status-fd`.
 */
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import { spawnDirect } from '@drover/native';
import { CriuError } from './errors.js';
import { logTail } from './criu.js';
import type { CriuTls } from './options.js';

/** A running lazy-pages daemon. */
export interface LazyPagesDaemon {
  pid: number;
  /** Resolves when every page has been fetched (exit 0); rejects with a CriuError otherwise. */
  done: Promise<void>;
  /** Stop it (SIGKILL by its PID). */
  kill(): void;
}

/** Options for `startLazyPages`. */
export interface LazyPagesOptions {
  criuPath: string;
  /** The images directory the lazy restore uses (the daemon's socket lives there too). */
  imagesDir: string;
  /** The source's page server. */
  pageServer: { address: string; port: number };
  /** TLS to it (CRIU's own; the daemon checks the source's certificate names its address). */
  tls?: CriuTls;
  logFile?: string;
  readyTimeoutMs?: number;
}

/** Start `criu lazy-pages` and resolve once it listens for the restore. */
export async function startLazyPages(opts: LazyPagesOptions): Promise<LazyPagesDaemon> {
  const logFile = opts.logFile ?? 'lazy-pages.log';
  const logPath = join(opts.imagesDir, logFile);
  const child = spawnDirect(
    opts.criuPath,
    [
      'lazy-pages',
      '--page-server',
      '--address',
      opts.pageServer.address,
      '--port',
      String(opts.pageServer.port),
      '-D',
      opts.imagesDir,
      '-o',
      logFile,
      '-v4',
      '--status-fd',
      '3',
      ...(opts.tls
        ? [
            '--tls',
            '--tls-cacert',
            opts.tls.caFile,
            '--tls-cert',
            opts.tls.certFile,
            '--tls-key',
            opts.tls.keyFile,
            ...(opts.tls.noCnVerify ? ['--tls-no-cn-verify'] : []),
          ]
        : []),
    ],
    { stdout: 'ignore', extraFds: ['pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4096)));
  const exited = child.exited.then((s) => s.exitCode);
  const failure = async (what: string): Promise<CriuError> =>
    new CriuError(what, {
      request: 'LAZY_PAGES',
      logPath,
      logTail: (await logTail(logPath)).concat(stderr ? [stderr.trim()] : []),
    });
  // Ready: CRIU writes one byte to the status fd (resolve on the first byte, not on EOF).
  const status = child.pipes.get(3) ?? null;
  const ready = new Promise<void>((resolve, reject) => {
    status?.once('data', () => resolve());
    void exited.then(async (code) =>
      reject(await failure(`lazy-pages exited (${code}) before it was ready`)),
    );
  });
  const timeoutMs = opts.readyTimeoutMs ?? 10_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      ready,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(new DroverError(ErrorCode.Timeout, `lazy-pages not ready in ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  } finally {
    clearTimeout(timer);
  }
  const done = exited.then(async (code) => {
    if (code !== 0) throw await failure(`lazy-pages failed (exit ${code})`);
  });
  done.catch(() => undefined);
  return {
    pid: child.pid,
    done,
    kill: () => {
      child.kill('SIGKILL');
    },
  };
}
