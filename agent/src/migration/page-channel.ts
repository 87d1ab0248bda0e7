/**
 * The channel a migration's memory takes: CRIU to CRIU, never through the agents, over CRIU's own
 * TLS with the agents' certificates, on a port of the listening host that admits only the
 * migration's peer. CRIU's page server checks its client's certificate chain but cannot check
 * whose it is (it would compare the name with its own address), and it accepts one connection:
 * anyone reaching the port first could make the move fail, or, for a lazy dump, ask for the
 * job's memory. So the listening agent admits the peer's address to that one port (a rule of the
 * agent's nftables table `inet drover_pages`) for the migration's life, and refuses everyone else
 * with a reset. Pairs: admit/close.
 */
import { existsSync } from 'node:fs';
import { createSocket } from 'node:dgram';
import { createServer, type AddressInfo } from 'node:net';
import { DroverError, ErrorCode, type Logger } from '@drover/common';
import { PAGE_SIZE, pageBytes, readDumpStats, type Criu, type CriuTls } from '@drover/criu';
import { readdir, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import {
  closeFd,
  isSameLiveProcess,
  pidfdOpen,
  runCommand,
  startTicks,
  waitForExit,
  type ChildStatus,
} from '@drover/native';

const TABLE = 'drover_pages';

/** TLS files of this agent (its certificate names its host and address). */
export interface AgentTlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
  /** The CA's revocation list: CRIU refuses a peer it lists (`--tls-cacrl`). */
  crlFile?: string;
}

async function nft(
  args: readonly string[],
  input?: string,
): Promise<{ code: number; stderr: string }> {
  try {
    const r = await runCommand('nft', args, {
      timeoutMs: 15_000,
      ...(input !== undefined ? { input } : {}),
    });
    return { code: r.code ?? 1, stderr: r.stderr };
  } catch (err) {
    return { code: 1, stderr: String(err) };
  }
}

/**
 * Make the agent's table afresh (an agent that restarted forgets the admissions of the
 * migrations it was in; they are over). Without nftables the page channel cannot be guarded and
 * moves that need one are refused (`admit` says why).
 */
export async function initPageChannel(log: Logger): Promise<void> {
  await nft(['delete', 'table', 'inet', TABLE]);
  const r = await nft(
    ['-f', '-'],
    [
      `table inet ${TABLE} {`,
      '  set guarded { type inet_service; }',
      '  set admitted { type ipv4_addr . inet_service; }',
      '  chain input {',
      '    type filter hook input priority filter - 1; policy accept;',
      '    ip saddr . tcp dport @admitted accept',
      '    tcp dport @guarded reject with tcp reset',
      '  }',
      '}',
    ].join('\n') + '\n',
  );
  if (r.code !== 0)
    log.warn('cannot create the page channel table; memory moves will be refused', {
      stderr: r.stderr,
    });
}

/** Guard `port` on this host: only `peer` may connect to it, until `closePort`. */
export async function admitPeer(port: number, peer: string): Promise<void> {
  const r = await nft(
    ['-f', '-'],
    [
      `add element inet ${TABLE} guarded { ${port} }`,
      `add element inet ${TABLE} admitted { ${peer} . ${port} }`,
    ].join('\n') + '\n',
  );
  if (r.code !== 0) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `cannot guard the page channel's port ${port} for ${peer} (nft: ${r.stderr.trim()})`,
      { details: { port, peer } },
    );
  }
}

/**
 * Stop guarding `port` (and admitting `peer` to it); a port not guarded is fine. Both in one
 * `nft` run (each costs the agent a fork); that batch fails whole when either element is already
 * gone, and then each is deleted on its own.
 */
export async function closePort(port: number, peer: string): Promise<void> {
  const admitted = `delete element inet ${TABLE} admitted { ${peer} . ${port} }`;
  const guarded = `delete element inet ${TABLE} guarded { ${port} }`;
  if ((await nft(['-f', '-'], `${admitted}\n${guarded}\n`)).code === 0) return;
  await nft(['-f', '-'], `${admitted}\n`);
  await nft(['-f', '-'], `${guarded}\n`);
}

/** A free TCP port on `host` (bound, read, released). */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * The address this host's connections to `host` come from (the kernel's route choice, read off a
 * connected UDP socket that sends nothing): what the peer must admit.
 */
export function localAddressToward(host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    s.once('error', (err) => {
      s.close();
      reject(err);
    });
    s.connect(9, host, () => {
      const a = s.address().address;
      s.close();
      resolve(a);
    });
  });
}

/**
 * CRIU's TLS options for this side of the page channel, with the agent's own certificate (null:
 * no certificates configured, the channel is plain TCP as everything else then is). A server
 * cannot check its client's name in CRIU; a client checks that the server's certificate names
 * the address it dials. Both check the peer's certificate against the CA's revocation list.
 */
export function pageTls(
  files: AgentTlsFiles | undefined,
  side: 'server' | 'client',
): CriuTls | undefined {
  if (!files) return undefined;
  // CRIU fails when a CRL it is given cannot be read: one not (yet) pushed is left out.
  const { crlFile, ...rest } = files;
  return {
    ...rest,
    ...(crlFile !== undefined && existsSync(crlFile) ? { crlFile } : {}),
    ...(side === 'server' ? { noCnVerify: true } : {}),
  };
}

/** A page server receiving one migration's pages on this host. */
export interface PageReceiver {
  host: string;
  port: number;
  /** Resolves when CRIU's page server has exited (its files are complete). */
  exited(timeoutMs: number): Promise<ChildStatus | null>;
  /** Kill it (a migration that is over before its pages are). */
  kill(): void;
  /** Stop admitting the peer; idempotent. */
  close(): Promise<void>;
}

/**
 * Start CRIU's page server for one migration: listening on `host`, on a port only `peer` is
 * admitted to, writing the pages into `imagesDir`, TLS with this agent's certificate when it has
 * one. It serves one connection, then exits.
 */
export async function receivePages(
  criu: Pick<Criu, 'pageServer'>,
  opts: { host: string; peer: string; imagesDir: string; tls: CriuTls | undefined },
): Promise<PageReceiver> {
  const port = await freePort(opts.host);
  await admitPeer(port, opts.peer);
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await closePort(port, opts.peer);
  };
  let server;
  try {
    server = await criu.pageServer({
      imagesDir: opts.imagesDir,
      address: opts.host,
      port,
      ...(opts.tls ? { tls: opts.tls } : {}),
    });
  } catch (err) {
    await close();
    throw err;
  }
  const pid = server.pid;
  const start = pid === null ? null : startTicks(pid);
  let pidfd: number | null = null;
  try {
    // Ours to reap (see findPageServer): its exit, and its CPU among the agent's children's.
    if (pid !== null) pidfd = pidfdOpen(pid);
  } catch {
    // Already gone (it served nobody, or ended at once): `exited` answers at once.
  }
  const exit =
    pidfd === null ? Promise.resolve(null) : waitForExit(pidfd).finally(() => closeFd(pidfd!));
  exit.catch(() => undefined);
  return {
    host: opts.host,
    port,
    exited: (timeoutMs) =>
      Promise.race([
        exit,
        new Promise<never>((_, reject) =>
          setTimeout(
            () =>
              reject(
                new DroverError(
                  ErrorCode.Timeout,
                  `the page server did not finish within ${timeoutMs} ms`,
                ),
              ),
            timeoutMs,
          ).unref(),
        ),
      ]),
    kill: () => {
      if (pid !== null && start !== null && isSameLiveProcess(pid, start))
        process.kill(pid, 'SIGKILL');
    },
    close,
  };
}

/**
 * A page connection makes no progress for this long — data waits in its send queue and nothing
 * is acknowledged — and it is cut: the bound on how long a stalled peer keeps a job frozen.
 */
export const PAGE_STALL_MS = 10_000;

/** Which TCP connection to watch: by the peer's address and either end's port. */
export interface ConnectionRef {
  peer: string;
  /** The port on the peer's side (we dialled it) or on ours (it dialled us). */
  peerPort?: number;
  localPort?: number;
}

/** One line pair of `ss -tinH`: the queue and what the peer has acknowledged. */
export interface ConnectionProgress {
  sendQ: number;
  bytesAcked: number;
}

/**
 * Parse `ss -tinH` output (with or without its State column, which a state filter drops): each
 * connection's send queue, and the bytes its peer acknowledged from the info line below it.
 */
export function parseSsProgress(text: string): ConnectionProgress[] {
  const out: ConnectionProgress[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (line.trim() === '' || /^\s/.test(line)) continue;
    const f = line.trim().split(/\s+/);
    const q = /^\d+$/.test(f[0] ?? '') ? f.slice(0, 2) : f.slice(1, 3);
    if (q.length < 2 || !q.every((x) => /^\d+$/.test(x))) continue;
    const acked = /\bbytes_acked:(\d+)/.exec(lines[i + 1] ?? '');
    out.push({ sendQ: Number(q[1]), bytesAcked: acked ? Number(acked[1]) : 0 });
  }
  return out;
}

function ssFilter(c: ConnectionRef): string[] {
  return [
    'dst',
    c.peer,
    ...(c.peerPort !== undefined ? ['dport', '=', `:${c.peerPort}`] : []),
    ...(c.localPort !== undefined ? ['sport', '=', `:${c.localPort}`] : []),
  ];
}

function ss(args: readonly string[]): Promise<string> {
  return runCommand('ss', args, { timeoutMs: 10_000 }).then(
    (r) => r.stdout,
    () => '',
  );
}

/**
 * Watch a page connection of CRIU's (this host's network namespace) while `until` runs: when
 * data has waited unacknowledged for `stallMs`, cut it (`ss -K`, SOCK_DESTROY), so CRIU sees an
 * error and unwinds by itself — curing its parasites and releasing the tree — where a dead link
 * would otherwise hold it for TCP's own retries (many minutes). Calls `onCut` once, just before
 * it cuts.
 */
export function watchPageConnection(
  c: ConnectionRef,
  until: Promise<unknown>,
  onCut: (why: string) => void,
  onAcked?: (bytes: number) => void,
  stallMs = PAGE_STALL_MS,
): void {
  let done = false;
  void until.finally(() => (done = true)).catch(() => undefined);
  let acked = -1;
  let since = performance.now();
  const tick = async (): Promise<void> => {
    if (done) return;
    const conns = parseSsProgress(await ss(['-tinH', 'state', 'established', ...ssFilter(c)]));
    const waiting = conns.some((x) => x.sendQ > 0);
    const total = conns.reduce((a, x) => a + x.bytesAcked, 0);
    if (conns.length > 0 && !done) onAcked?.(total);
    const still = waiting && total === acked;
    if (!still) {
      acked = total;
      since = performance.now();
    } else if (performance.now() - since > stallMs) {
      // The reason first: CRIU fails the moment its socket is destroyed, and its error may
      // reach the caller before `ss -K` has even exited.
      onCut(
        `the page connection to ${c.peer} made no progress for ${Math.round(stallMs / 1000)} s`,
      );
      await ss(['-K', ...ssFilter(c)]);
      return;
    }
    // Each look is an `ss` child, a fork of the agent: every 2 s while the connection moves
    // (or has nothing to send), every second once it stands still, so a stall is still cut
    // within a second of `stallMs`.
    if (!done) setTimeout(() => void tick(), still ? 1000 : 2000).unref();
  };
  setTimeout(() => void tick(), 2000).unref();
}

/**
 * stop-copy: the page server has finished, and every page the dump says it wrote is here (the
 * dump's statistics came through the framed stream): TLS guards each byte in transit; this
 * guards against a stream cut short. The port's admission is the caller's to close (no listener
 * is left behind it: not in the frozen window).
 */
export async function checkPagesArrived(
  scratch: string,
  pages: Pick<PageReceiver, 'exited'>,
): Promise<void> {
  const status = await pages.exited(30_000);
  if (status !== null && (status.exitCode !== 0 || status.signal !== null)) {
    throw new DroverError(
      ErrorCode.DataLoss,
      `the page server ended with ${status.signal ?? `exit ${status.exitCode}`} (see page-server.log)`,
      { details: { exitCode: status.exitCode, signal: status.signal } },
    );
  }
  const stats = await readDumpStats(scratch);
  const expected = (stats.pagesWritten + stats.shpagesWritten) * PAGE_SIZE;
  const got = await pageBytes(scratch);
  if (got !== expected) {
    throw new DroverError(
      ErrorCode.DataLoss,
      `the page stream is incomplete: ${got / PAGE_SIZE} of the ${expected / PAGE_SIZE} pages the dump wrote arrived`,
      { details: { pagesArrived: got / PAGE_SIZE, pagesWritten: expected / PAGE_SIZE } },
    );
  }
}

/** Fault injection (`DROVER_FAULT=drop-page`): lose the last page that arrived, as a cut stream would. */
export async function dropOnePage(scratch: string): Promise<void> {
  for (const f of (await readdir(scratch)).filter((n) => n.startsWith('pages-')).sort()) {
    const path = join(scratch, f);
    const size = (await stat(path)).size;
    if (size >= PAGE_SIZE) {
      await truncate(path, size - PAGE_SIZE);
      return;
    }
  }
}
