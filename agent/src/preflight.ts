/** Preflight: whether a running job can be checkpointed and moved, and if not, why — before anything is frozen. */
import { readFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import type { Stats } from 'node:fs';
import type { PreflightReason, PreflightReport } from '@drover/protocol';
import {
  fdIsAppend,
  fileMaps,
  listFds,
  netNamespace,
  processTree,
  readStatus,
  selfHasCapability,
  socketInode,
  statFd,
  statMap,
  type OpenFd,
} from './proc-scan.js';
import { readTcpTables, readUnixSockets, tcpReasons, unixReasons } from './preflight-net.js';
import { jobDirBytes } from './job-image.js';
import { readHostMounts } from './job-mounts.js';
import type { JobRecord } from './job-store.js';
import { JobKind } from '@drover/protocol';

/** Preflight's input for one of this agent's live jobs. */
export async function preflightInputOf(job: JobRecord): Promise<PreflightInput> {
  const mounts =
    job.kind === JobKind.namespaced && job.rootPid !== null
      ? await readHostMounts(job.rootPid).catch(() => [])
      : [];
  return {
    jobId: job.id,
    rootPid: job.rootPid!,
    hostAddresses: hostAddresses(),
    jobDir: job.jobDir,
    ownNetwork: job.network?.mode === 'job',
    mountpoints: mounts.map((m) => m.mountpoint),
  };
}

/** What preflight inspects. */
export interface PreflightInput {
  jobId: string;
  /** Host PID of the job's root process (for namespaced jobs, tini = the PID namespace init). */
  rootPid: number;
  /** Addresses that belong to this host (all interfaces, incl. loopback), e.g. from hostAddresses(). */
  hostAddresses: readonly string[];
  /** The job's directory: it travels with the job (its size is reported and checked). */
  jobDir: string;
  /**
   * The job has its own network namespace, which moves with it: TCP connections in it move too
   * (CRIU's --tcp-established; docs/NETWORK.md).
   */
  ownNetwork: boolean;
  /** Paths the job has mounted from the host, which the destination must have too. */
  mountpoints?: readonly string[];
}

/** What preflight needs to know about a destination host. */
export interface DestinationFacts {
  host: string;
  cpuFlags: readonly string[];
  /** Ask the destination which of these files are missing / differ in size (the agent wires this to a NATS call). */
  checkFiles(files: { path: string; size?: number }[]): Promise<{
    missing: string[];
    sizeDiffers: { path: string; expected: number; actual: number }[];
    freeBytes?: number;
  }>;
}

/** A regular file the job has open or mapped; `size` is null for O_APPEND files (CRIU doesn't size-check those). */
export interface JobFile {
  path: string;
  size: number | null;
  append: boolean;
}

/** Linux capability CAP_SYS_RESOURCE: without it CRIU cannot read another uid's rlimits. */
const CAP_SYS_RESOURCE = 24;

/**
 * Devices that are safe to have open: CRIU reopens them by path and every host has them.
 * Matched by path, and by (major, minor) for when the job's mount namespace names them differently.
 */
const HARMLESS_DEVICE_PATHS = [
  /^\/dev\/(null|zero|full|random|urandom|ptmx|console)$/,
  /^\/dev\/tty\w*$/,
  /^\/dev\/pts\/\d+$/,
];
/** mem major 1: null 3, zero 5, full 7, random 8, urandom 9; major 5: tty, console, ptmx; 136-143: pts. */
function harmlessDevice(path: string, st: Stats): boolean {
  if (HARMLESS_DEVICE_PATHS.some((re) => re.test(path))) return true;
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
  if (major === 1) return [3, 5, 7, 8, 9].includes(minor);
  return major === 4 || major === 5 || (major >= 136 && major <= 143);
}

/**
 * Mapped files under these prefixes are left out of `jobFiles`: they are the OS (binaries,
 * shared libraries, locales), which the fleet provisions identically on every host; checking
 * hundreds of them would only slow every preflight. Files the job opened by fd are always kept.
 */
const SYSTEM_PREFIXES = ['/usr/', '/lib/', '/lib32/', '/lib64/', '/libx32/', '/bin/', '/sbin/'];
/** Pseudo file systems are never "files the destination must have"; /dev/shm holds real files. */
const PSEUDO_PREFIXES = ['/proc/', '/sys/', '/dev/'];
const pseudo = (p: string): boolean =>
  PSEUDO_PREFIXES.some((x) => p.startsWith(x)) && !p.startsWith('/dev/shm/');

/**
 * Flags in /proc/cpuinfo that user space cannot observe or use (kernel-synthesised, MSR/APIC,
 * virtualisation, mitigation and power-management bits). They are ignored when comparing hosts;
 * every other flag counts, so an unknown flag errs on the side of reporting.
 */
const KERNEL_ONLY_FLAGS = new Set(
  (
    'acpi aperfmperf apic arat arch_capabilities arch_perfmon art avic bts cat_l2 cat_l3 cdp_l3 ' +
    'constant_tsc cpb cpuid cpuid_fault cqm cqm_llc cqm_mbm_local cqm_mbm_total cqm_occup_llc ' +
    'cr8_legacy dca de decodeassists ds_cpl dtes64 dtherm epb ept ept_ad est extapic extd_apicid ' +
    'flexpriority flush_l1d flushbyasid hw_pstate hwp hwp_act_window hwp_epp hwp_notify hwp_pkg_req ' +
    'hypervisor ibpb ibrs ibrs_enhanced ibs ida invpcid_single lbrv mba mca mce md_clear monitor msr ' +
    'mtrr nodeid_msr nonstop_tsc nonstop_tsc_s3 nopl npt nrip_save osvw pae pat pause_filter ' +
    'pausefilter pbe pcid pdcm pebs perfctr_core perfctr_llc perfctr_nb pfthreshold pge pln proc_feedback ' +
    'pse pse36 pti pts rapl rep_good sev sev_es skinit smap smca sme smep smx ssbd stibp svm svm_lock ' +
    'tm tm2 tpr_shadow tsc_adjust tsc_deadline_timer tsc_known_freq tsc_reliable tsc_scale umip ' +
    'user_shstk v_vmsave_vmload vgif virt_ssbd vmcb_clean vme vmmcall vmx vnmi vpid wdt x2apic ' +
    'xtopology xtpr amd_ssbd amd_stibp amd_ibrs amd_ibpb amd_dcm overflow_recov succor irperf ' +
    'split_lock_detect ring3mwait cppc cmp_legacy topoext'
  ).split(' '),
);

/** Every address of this host's interfaces, plus 127.0.0.1 and ::1. */
export function hostAddresses(): string[] {
  const out = new Set(['127.0.0.1', '::1']);
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) out.add(a.address.replace(/%.*$/, ''));
  }
  return [...out];
}

/** The `flags` of the first processor in /proc/cpuinfo, sorted. */
export async function cpuFlags(): Promise<string[]> {
  const text = await readFile('/proc/cpuinfo', 'utf8');
  const line = /^flags\s*:(.*)$/m.exec(text)?.[1] ?? '';
  return [...new Set(line.trim().split(/\s+/).filter(Boolean))].sort();
}

/** One fd or mapping of the tree, with what stat() said about it. */
interface Opened {
  pid: number;
  fd: number | null;
  range: string | null;
  path: string;
  st: Stats;
}

/** Stat every non-socket fd and every file mapping of `pids`; vanished ones are skipped. */
async function scanOpened(pids: readonly number[], fds: readonly OpenFd[]): Promise<Opened[]> {
  const out: Opened[] = [];
  for (const f of fds) {
    if (!f.target.startsWith('/') || f.target.endsWith(' (deleted)')) continue;
    const st = await statFd(f.pid, f.fd);
    if (st !== null) out.push({ pid: f.pid, fd: f.fd, range: null, path: f.target, st });
  }
  for (const pid of pids) {
    for (const m of await fileMaps(pid)) {
      if (m.path.endsWith(' (deleted)')) continue;
      const st = await statMap(m);
      if (st !== null) out.push({ pid, fd: null, range: m.range, path: m.path, st });
    }
  }
  return out;
}

/** The regular files of `opened` the destination must have, one entry per path. */
async function filesOf(opened: readonly Opened[]): Promise<JobFile[]> {
  const byPath = new Map<string, JobFile>();
  for (const o of opened) {
    if (!o.st.isFile() || o.st.nlink === 0 || pseudo(o.path)) continue;
    if (o.fd === null && SYSTEM_PREFIXES.some((p) => o.path.startsWith(p))) continue;
    const append = o.fd === null ? false : await fdIsAppend(o.pid, o.fd);
    if (append === null) continue;
    const prev = byPath.get(o.path);
    // One non-append opener is enough for CRIU to check the size.
    const isAppend = append && (prev?.append ?? true);
    byPath.set(o.path, { path: o.path, size: isAppend ? null : o.st.size, append: isAppend });
  }
  // Code-unit order: `localeCompare` builds an ICU collation per call (~2 ms a preflight).
  return [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/**
 * Regular files open by the tree of `rootPid`: by fd (anywhere) and by file-backed mmap (outside
 * the OS directories /usr, /lib*, /bin, /sbin). Deleted files (CRIU carries their contents) and
 * /proc, /sys and /dev (except /dev/shm) are left out. `size` is null for O_APPEND files.
 * Paths are as the job sees them: jobs share the host's root directory here.
 */
export async function jobFiles(rootPid: number): Promise<JobFile[]> {
  const pids = await processTree(rootPid);
  const fds = (await Promise.all(pids.map(listFds))).flat();
  return filesOf(await scanOpened(pids, fds));
}

/** DEVICE reasons, one per device path, for character/block devices that are not harmless. */
function deviceReasons(opened: readonly Opened[]): PreflightReason[] {
  const byPath = new Map<string, Opened[]>();
  for (const o of opened) {
    if (!(o.st.isCharacterDevice() || o.st.isBlockDevice()) || harmlessDevice(o.path, o.st))
      continue;
    byPath.set(o.path, [...(byPath.get(o.path) ?? []), o]);
  }
  return [...byPath].map(([path, list]) => {
    const first = list[0] as Opened;
    const how = first.fd !== null ? `fd ${first.fd}` : `a mapping at ${first.range}`;
    const kind = first.st.isBlockDevice() ? 'block' : 'character';
    return {
      code: 'DEVICE',
      message:
        `process ${first.pid} has the ${kind} device ${path} open (${how}); CRIU cannot checkpoint ` +
        'the state a driver keeps for it, and the destination may not have the same hardware.',
      details: {
        pid: first.pid,
        fd: first.fd,
        path,
        kind,
        holders: list.map((o) => ({ pid: o.pid, fd: o.fd, range: o.range })),
      },
    };
  });
}

/** NON_ROOT_UID reasons: CRIU reads every task's rlimits with prlimit(), which needs matching ids or CAP_SYS_RESOURCE. */
async function credentialReasons(pids: readonly number[]): Promise<PreflightReason[]> {
  if (await selfHasCapability(CAP_SYS_RESOURCE)) return [];
  const reasons: PreflightReason[] = [];
  for (const pid of pids) {
    const s = await readStatus(pid);
    if (s === null || s.state === 'Z') continue;
    const ids = [...s.uids.slice(0, 3), ...s.gids.slice(0, 3)];
    if (ids.every((id) => id === 0)) continue;
    reasons.push({
      code: 'NON_ROOT_UID',
      message:
        `process ${pid} (${s.name}) runs as uid ${s.uids.slice(0, 3).join('/')} gid ${s.gids.slice(0, 3).join('/')}; ` +
        'root on this host lacks CAP_SYS_RESOURCE, so CRIU fails with "Can\'t get rlimit 0: Operation not ' +
        'permitted". Run the job as root here, or give the agent CAP_SYS_RESOURCE.',
      details: { pid, name: s.name, uids: s.uids, gids: s.gids },
    });
  }
  return reasons;
}

/** Socket reasons: each distinct network namespace of the tree is read once, through one of its PIDs. */
async function socketReasons(
  pids: readonly number[],
  fds: readonly OpenFd[],
  input: PreflightInput,
  moving: boolean,
): Promise<PreflightReason[]> {
  const holders = new Map<number, { pid: number; fd: number }[]>();
  for (const f of fds) {
    const inode = socketInode(f.target);
    if (inode !== null)
      holders.set(inode, [...(holders.get(inode) ?? []), { pid: f.pid, fd: f.fd }]);
  }
  if (holders.size === 0) return [];
  const ownNs = await netNamespace(process.pid);
  const namespaces = new Map<string, number[]>();
  for (const pid of pids) {
    const ns = await netNamespace(pid);
    if (ns !== null) namespaces.set(ns, [...(namespaces.get(ns) ?? []), pid]);
  }
  const reasons: PreflightReason[] = [];
  for (const [ns, members] of namespaces) {
    // Any member will do; try the next one if it exits under us.
    for (const pid of members) {
      const tcp = await readTcpTables(pid);
      if (tcp === null) continue;
      const moveHere = moving && ns === ownNs;
      // The job's own namespace travels with it, and every connection in it (tcp-established).
      if (!(input.ownNetwork && ns !== ownNs))
        reasons.push(...tcpReasons(tcp, holders, input.hostAddresses, moveHere));
      try {
        reasons.push(...unixReasons(await readUnixSockets(pid, ns === ownNs), holders));
      } catch (err) {
        reasons.push({
          code: 'UNSUPPORTED',
          message: `could not list UNIX sockets of network namespace ${ns} (ss: ${(err as Error).message}); connections to outside the job are unchecked.`,
          details: { kind: 'unix-scan-failed', pid, namespace: ns },
        });
      }
      break;
    }
  }
  return reasons;
}

/** Files and CPU reasons against a destination. */
async function destinationReasons(
  files: readonly JobFile[],
  mountpoints: readonly string[],
  jobDirBytes: number,
  dest: DestinationFacts,
): Promise<PreflightReason[]> {
  const reasons: PreflightReason[] = [];
  const answer = await dest.checkFiles([
    ...files.map((f) => (f.size === null ? { path: f.path } : { path: f.path, size: f.size })),
    ...mountpoints.filter((m) => !files.some((f) => f.path === m)).map((path) => ({ path })),
  ]);
  if (answer.freeBytes !== undefined && answer.freeBytes < jobDirBytes) {
    reasons.push({
      code: 'NO_SPACE_ON_DESTINATION',
      message: `${dest.host} has ${answer.freeBytes} bytes free for job directories; this job's directory, which travels with it, holds ${jobDirBytes}.`,
      details: { host: dest.host, freeBytes: answer.freeBytes, jobDirBytes },
    });
  }
  const list = (paths: readonly string[]): string =>
    paths.slice(0, 5).join(', ') + (paths.length > 5 ? ` and ${paths.length - 5} more` : '');
  if (answer.missing.length > 0) {
    reasons.push({
      code: 'FILE_MISSING_ON_DESTINATION',
      message: `${dest.host} lacks ${answer.missing.length} path(s) the job has open, mapped or mounted: ${list(answer.missing)}. CRIU reopens files by path on restore: keep a job's files in its job directory (it travels with the job) or on storage every host mounts.`,
      details: { host: dest.host, paths: answer.missing },
    });
  }
  if (answer.sizeDiffers.length > 0) {
    const paths = answer.sizeDiffers.map(
      (d) => `${d.path} (${d.actual} bytes, here ${d.expected})`,
    );
    reasons.push({
      code: 'FILE_SIZE_DIFFERS_ON_DESTINATION',
      message: `on ${dest.host} these files have another size than here: ${list(paths)}. CRIU refuses to restore a file whose size changed (open it O_APPEND if it only grows).`,
      details: {
        host: dest.host,
        paths: answer.sizeDiffers.map((d) => d.path),
        files: answer.sizeDiffers,
      },
    });
  }
  const theirs = new Set(dest.cpuFlags);
  const missing = (await cpuFlags()).filter((f) => !theirs.has(f) && !KERNEL_ONLY_FLAGS.has(f));
  if (missing.length > 0) {
    reasons.push({
      code: 'CPU_FEATURES_MISSING',
      message: `${dest.host}'s CPU lacks ${missing.length} feature(s) this host has: ${list(missing)}; a job that detected them here would crash with SIGILL there.`,
      details: { host: dest.host, flags: missing },
    });
  }
  return reasons;
}

function notRunning(
  input: Pick<PreflightInput, 'jobId' | 'rootPid'>,
  state: string | null,
): PreflightReport {
  const what = state === null ? 'does not exist' : 'is a zombie';
  return {
    jobId: input.jobId,
    ok: false,
    reasons: [
      {
        code: 'NOT_RUNNING',
        message: `the job's root process ${input.rootPid} ${what}; there is nothing to checkpoint.`,
        details: { pid: input.rootPid, state },
      },
    ],
    files: [],
    jobDirBytes: 0,
  };
}

/**
 * Inspect the tree of `input.rootPid` without stopping it and list every reason a checkpoint, or
 * a move to `destination` when given, would fail. The scan is a snapshot: processes may come and
 * go during it (vanished ones are skipped); a root that is gone at the start or end is NOT_RUNNING.
 * Errors from `destination.checkFiles` (e.g. a NATS timeout) propagate; no partial verdict.
 */
export async function preflight(
  input: PreflightInput,
  destination?: DestinationFacts,
): Promise<PreflightReport> {
  const root = await readStatus(input.rootPid);
  if (root === null || root.state === 'Z' || root.state === 'X')
    return notRunning(input, root?.state ?? null);
  const pids = await processTree(input.rootPid);
  const fds = (await Promise.all(pids.map(listFds))).flat();
  const opened = await scanOpened(pids, fds);
  const files = await filesOf(opened);
  const dirBytes = await jobDirBytes(input.jobDir);
  const reasons: PreflightReason[] = [
    ...(await credentialReasons(pids)),
    ...deviceReasons(opened),
    ...(await socketReasons(pids, fds, input, destination !== undefined)),
    ...(destination === undefined
      ? []
      : await destinationReasons(files, input.mountpoints ?? [], dirBytes, destination)),
  ];
  const after = await readStatus(input.rootPid);
  if (after === null || after.state === 'Z' || after.state === 'X')
    return notRunning(input, after?.state ?? null);
  return {
    jobId: input.jobId,
    ok: reasons.length === 0,
    reasons,
    files: files.map((f) => ({ path: f.path, size: f.size })),
    jobDirBytes: dirBytes,
  };
}
