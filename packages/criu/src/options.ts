/** Typed dump/restore/page-server options and their compilation into `criu_opts`. */
import { DroverError, ErrorCode } from '@drover/common';
import { CgroupMode, NetworkLock, type RpcOpts } from './rpc-schema.js';
import { IMAGES_DIR_CHILD_FD } from './swrk.js';

/** CRIU log verbosity: 0 errors only … 4 debug. */
export type CriuLogLevel = 0 | 1 | 2 | 3 | 4;

/**
 * CRIU's own TLS on the page channel (`--tls`, GnuTLS): both ends present a certificate and check
 * the other's chain against `caFile`. A client also checks that the server's certificate names
 * the address it dials; a server cannot check its client's name (CRIU would compare it with the
 * server's own address), so `noCnVerify` is for servers.
 */
export interface CriuTls {
  caFile: string;
  certFile: string;
  keyFile: string;
  /** The CA's revocation list (PEM): a peer whose certificate it lists is refused. */
  crlFile?: string;
  noCnVerify?: boolean;
}

/** Options shared by every operation that works on an images directory. */
export interface ImagesOptions {
  /** The images directory (created by the caller). CRIU's log is written here too. */
  imagesDir: string;
  /** Log file name inside `imagesDir` (no subdirectories). Default per operation. */
  logFile?: string;
  /** Default 4 (debug): cheap, and the log is what explains a failure. */
  logLevel?: CriuLogLevel;
  /** `--external` entries, e.g. `mnt[]` for jobs in their own mount namespace. */
  externals?: readonly string[];
  /** Processes attached to a terminal/session outside the tree (`--shell-job`). */
  shellJob?: boolean;
  /** Dump/restore established TCP connections (`--tcp-established`). */
  tcpEstablished?: boolean;
  /**
   * Dump: leave out connections still in a listener's accept queue or half-open
   * (`--skip-in-flight`) instead of failing; their clients see a reset.
   */
  skipInFlight?: boolean;
  /** Allow external UNIX socket peers (`--ext-unix-sk`). */
  extUnixSk?: boolean;
  /** Dump/restore file locks and leases (`--file-locks`). */
  fileLocks?: boolean;
  /** Dump: hard-link open files whose name is gone but that have other links (`--link-remap`). */
  linkRemap?: boolean;
  /** Dump: the largest unlinked ("ghost") file carried in the images, in bytes (`--ghost-limit`). */
  ghostLimitBytes?: number;
  /** Restore: connected TCP sockets come back closed (`--tcp-close`). */
  tcpClose?: boolean;
  /** Restore: sysctls this kernel lacks are warnings, not failures (`--weak-sysctls`). */
  weakSysctls?: boolean;
  /** Dump: a device file reachable only by another path is dumped by that path (`--evasive-devices`). */
  evasiveDevices?: boolean;
  /**
   * How to lock the network while TCP connections are dumped. Default nftables. A restore
   * ignores it: CRIU undoes the lock the way the dump's inventory says it was made.
   */
  networkLock?: NetworkLock;
  /**
   * CRIU's NOTIFY callbacks (`CriuHooks`), default on. Each stage is a round trip to the caller
   * over the RPC socket (~0.2–0.5 ms here, six per restore); a caller with no hooks can go
   * without them.
   */
  notify?: boolean;
  /** cgroup handling (`--manage-cgroups=MODE`). */
  manageCgroups?: CgroupMode;
  /** Lazy pages (post-copy) on dump or restore. */
  lazyPages?: boolean;
  /** Seconds CRIU may spend freezing/collecting the tree (`--timeout`). */
  timeoutSec?: number;
  /** TLS on the page channel (a dump's page client or lazy page server, a page server). */
  tls?: CriuTls;
}

/** Options for DUMP and PRE_DUMP. */
export interface DumpOptions extends ImagesOptions {
  /** Host PID of the tree's root. */
  pid: number;
  /** Leave the tree running after the dump (`--leave-running`). */
  leaveRunning?: boolean;
  /** Previous (pre-dump) images, relative to `imagesDir` (`--prev-images-dir`). */
  parentImages?: string;
  /** Track memory changes for later incremental dumps (needs soft-dirty). */
  trackMem?: boolean;
  /** Freeze through this cgroup instead of ptrace (`--freeze-cgroup`). */
  freezeCgroup?: string;
  /** Send pages to a page server instead of the images dir. */
  pageServer?: { address: string; port: number };
}

/** Options for RESTORE. */
export interface RestoreOptions extends ImagesOptions {
  /** Root directory for the restored tree (`--root`). */
  root?: string;
  /** Leave the restored tasks stopped (`--leave-stopped`), the seed's "frozen after restart". */
  leaveStopped?: boolean;
  /** Restore the root as a child of the swrk caller instead of detaching it. */
  rstSibling?: boolean;
  /** cgroup roots to restore into (`--cgroup-root [ctrl:]path`). */
  cgroupRoots?: readonly { controller?: string; path: string }[];
  /** Inherited fds, by key (`--inherit-fd fd[N]:key`); `fd` is the child fd number. */
  inheritFds?: readonly { key: string; fd: number }[];
  /** Where lazy pages come from (post-copy restore): the source's page server. */
  pageServer?: { address: string; port: number };
}

/** Options for PAGE_SERVER (receives pages into `imagesDir`, or serves them for lazy pages). */
export interface PageServerOptions extends ImagesOptions {
  address: string;
  port: number;
}

const LOG_FILE_RE = /^[A-Za-z0-9._-]+$/;

function invalid(message: string): DroverError {
  return new DroverError(ErrorCode.InvalidArgument, message);
}

function common(opts: ImagesOptions, defaultLog: string): RpcOpts {
  const logFile = opts.logFile ?? defaultLog;
  if (!LOG_FILE_RE.test(logFile)) throw invalid(`log file must be a plain name: ${logFile}`);
  const out: RpcOpts = {
    // The directory rides on the child's fd 4; a path through /proc/self works in any namespace.
    images_dir_fd: -1,
    images_dir: `/proc/self/fd/${IMAGES_DIR_CHILD_FD}`,
    log_file: logFile,
    log_level: opts.logLevel ?? 4,
    notify_scripts: opts.notify ?? true,
    network_lock: NetworkLock[opts.networkLock ?? 'nftables'],
  };
  if (opts.externals?.length) out.external = [...opts.externals];
  if (opts.shellJob) out.shell_job = true;
  if (opts.tcpEstablished) out.tcp_established = true;
  if (opts.skipInFlight) out.tcp_skip_in_flight = true;
  if (opts.extUnixSk) out.ext_unix_sk = true;
  if (opts.fileLocks) out.file_locks = true;
  if (opts.linkRemap) out.link_remap = true;
  if (opts.tcpClose) out.tcp_close = true;
  if (opts.weakSysctls) out.weak_sysctls = true;
  if (opts.evasiveDevices) out.evasive_devices = true;
  if (opts.ghostLimitBytes !== undefined) {
    const g = opts.ghostLimitBytes;
    if (!Number.isInteger(g) || g < 0 || g > 0xffff_ffff) {
      throw invalid(`ghostLimitBytes must be an integer in 0..4294967295: ${g}`);
    }
    out.ghost_limit = g;
  }
  if (opts.lazyPages) out.lazy_pages = true;
  if (opts.manageCgroups !== undefined) {
    out.manage_cgroups = true;
    out.manage_cgroups_mode = CgroupMode[opts.manageCgroups];
  }
  if (opts.tls) {
    out.tls = true;
    out.tls_cacert = opts.tls.caFile;
    out.tls_cert = opts.tls.certFile;
    out.tls_key = opts.tls.keyFile;
    if (opts.tls.crlFile !== undefined) out.tls_cacrl = opts.tls.crlFile;
    if (opts.tls.noCnVerify) out.tls_no_cn_verify = true;
  }
  if (opts.timeoutSec !== undefined) {
    if (!Number.isInteger(opts.timeoutSec) || opts.timeoutSec <= 0) {
      throw invalid(`timeoutSec must be a positive integer: ${opts.timeoutSec}`);
    }
    out.timeout = opts.timeoutSec;
  }
  return out;
}

function checkPid(pid: number): void {
  if (!Number.isInteger(pid) || pid <= 0) throw invalid(`pid must be a positive integer: ${pid}`);
}

function checkEndpoint(ps: { address: string; port: number }): void {
  if (!Number.isInteger(ps.port) || ps.port < 0 || ps.port > 65535) {
    throw invalid(`page server port out of range: ${ps.port}`);
  }
  if (ps.address.length === 0) throw invalid('page server address is empty');
}

/** Compile DumpOptions into `criu_opts`. Throws InvalidArgument on bad input. */
export function compileDumpOptions(opts: DumpOptions, logFile = 'dump.log'): RpcOpts {
  checkPid(opts.pid);
  const out = common(opts, logFile);
  out.pid = opts.pid;
  if (opts.leaveRunning) out.leave_running = true;
  if (opts.parentImages !== undefined) out.parent_img = opts.parentImages;
  if (opts.trackMem) out.track_mem = true;
  if (opts.freezeCgroup !== undefined) out.freeze_cgroup = opts.freezeCgroup;
  if (opts.pageServer) {
    checkEndpoint(opts.pageServer);
    out.ps = { address: opts.pageServer.address, port: opts.pageServer.port };
  }
  return out;
}

/** Compile RestoreOptions into `criu_opts`. */
export function compileRestoreOptions(opts: RestoreOptions): RpcOpts {
  const out = common(opts, 'restore.log');
  if (opts.root !== undefined) out.root = opts.root;
  if (opts.leaveStopped) out.leave_stopped = true;
  if (opts.rstSibling) out.rst_sibling = true;
  if (opts.cgroupRoots?.length) {
    out.cg_root = opts.cgroupRoots.map((r) =>
      r.controller === undefined ? { path: r.path } : { ctrl: r.controller, path: r.path },
    );
  }
  if (opts.inheritFds?.length) out.inherit_fd = opts.inheritFds.map((f) => ({ ...f }));
  if (opts.pageServer) {
    checkEndpoint(opts.pageServer);
    out.ps = { address: opts.pageServer.address, port: opts.pageServer.port };
  }
  return out;
}

/** Compile PageServerOptions into `criu_opts`. */
export function compilePageServerOptions(opts: PageServerOptions): RpcOpts {
  checkEndpoint(opts);
  const out = common(opts, 'page-server.log');
  // The page server runs on as a daemon after the RPC session that started it has closed: a
  // notify (status-ready) sent then meets a closed socket and kills it.
  out.notify_scripts = false;
  out.ps = { address: opts.address, port: opts.port };
  return out;
}

/** The glibc tunable that backs malloc's heap with transparent huge pages (glibc >= 2.35). */
const HUGE_HEAP = 'glibc.malloc.hugetlb=1';

/**
 * The environment of a page server's CRIU. Over TLS, CRIU 4.2's receiving page server keeps
 * three in four of the records GnuTLS hands it (`tls_recv_data_to_fd` frees only the last packet
 * of each 64 KiB it reads): its heap grows by three quarters of the pages it receives, and
 * faulting in and zeroing that fresh memory 4 KiB at a time is a third of its CPU, far more than
 * the cipher. Backing the heap with transparent huge pages (`glibc.malloc.hugetlb=1`) takes one
 * fault per 2 MiB instead of 512 and halves the page server's CPU (docs/MIGRATION.md, _Its
 * rate_). Host setup builds CRIU with that leak fixed; this is for a CRIU it did not build (on a
 * fixed one the heap stays small and the tunable changes nothing). Older glibc ignores the
 * tunable; a `glibc.malloc.hugetlb` already set in `base` is kept. Without TLS, `base` as it is.
 */
export function pageServerEnv(opts: PageServerOptions, base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  if (!opts.tls) return base;
  const tunables = base.GLIBC_TUNABLES ?? '';
  if (/(^|:)glibc\.malloc\.hugetlb=/.test(tunables)) return base;
  return { ...base, GLIBC_TUNABLES: tunables ? `${tunables}:${HUGE_HEAP}` : HUGE_HEAP };
}
