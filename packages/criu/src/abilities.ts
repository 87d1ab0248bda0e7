/**
 * What a host's CRIU can do: the optional libraries the binary was built with, and each kernel
 * feature `criu check --feature NAME` confirms or denies (the checks behind `criu check --all`).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A host's CRIU abilities (see `CriuAbilities` in @drover/protocol, which mirrors it). */
export interface CriuAbilities {
  /** Optional libraries CRIU links: `libbpf` (BPF maps), `gnutls` (TLS), `nftables` (network lock). */
  build: string[];
  /** Features `criu check --feature` confirms, sorted. */
  features: string[];
  /** Features it denies (or that this CRIU does not know), sorted. */
  missing: string[];
}

/** The optional libraries CRIU detects when it is built, by the shared object it then links. */
const BUILD_LIBRARIES: readonly (readonly [string, RegExp])[] = [
  ['libbpf', /\blibbpf\.so/],
  ['gnutls', /\blibgnutls\.so/],
  ['nftables', /\blibnftables\.so/],
];

/** CRIU 4.2's `criu check --feature` names (criu/cr-check.c), the ones `check --all` runs. */
export const CRIU_FEATURES = [
  'mnt_id',
  'mem_dirty_track',
  'aio_remap',
  'timerfd',
  'tun',
  'tun_ns',
  'userns',
  'fdinfo_lock',
  'seccomp_suspend',
  'seccomp_filters',
  'loginuid',
  'cgroupns',
  'autofs',
  'tcp_half_closed',
  'compat_cr',
  'uffd',
  'uffd-noncoop',
  'can_map_vdso',
  'sk_ns',
  'sk_unix_file',
  'net_diag_raw',
  'nsid',
  'link_nsid',
  'kcmp_epoll',
  'timens',
  'external_net_ns',
  'clone3_set_tid',
  'newifindex',
  'nftables',
  'pidfd_store',
  'ns_pid',
  'network_lock_nftables',
  'sockopt_buf_lock',
  'memfd_hugetlb',
  'move_mount_set_group',
  'openat2',
  'get_rseq_conf',
  'ipv6_freebind',
  'pagemap_scan',
  'timer_cr_ids',
  'overlayfs_maps',
  'breakpoints',
] as const;

/** The optional libraries named in `ldd` output of a CRIU binary. */
export function buildLibrariesOf(lddOutput: string): string[] {
  return BUILD_LIBRARIES.filter(([, re]) => re.test(lddOutput)).map(([name]) => name);
}

/**
 * Probe `criuPath`: `ldd` for its libraries, then every feature check, two at a time (each
 * takes ~30 ms here: CRIU probes the kernel afresh on every run). Never throws: a check that
 * cannot run counts as missing.
 */
export async function probeAbilities(
  criuPath: string,
  features: readonly string[] = CRIU_FEATURES,
): Promise<CriuAbilities> {
  const ldd = await run('ldd', [criuPath], { timeout: 10_000 }).then(
    (r) => r.stdout,
    () => '',
  );
  const ok: string[] = [];
  const missing: string[] = [];
  const queue = [...features];
  const worker = async (): Promise<void> => {
    for (let f = queue.shift(); f !== undefined; f = queue.shift()) {
      const passed = await run(criuPath, ['check', '--feature', f], { timeout: 20_000 }).then(
        () => true,
        () => false,
      );
      (passed ? ok : missing).push(f);
    }
  };
  await Promise.all([worker(), worker()]);
  return { build: buildLibrariesOf(ldd), features: ok.sort(), missing: missing.sort() };
}
