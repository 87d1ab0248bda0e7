/** Detecting the cgroup layout of this host: where v2 and the v1 freezer/memory controllers live. */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';

/** Which cgroup hierarchy provides a feature. */
export const CgroupVersion = { V1: 'v1', V2: 'v2' } as const;
export type CgroupVersion = (typeof CgroupVersion)[keyof typeof CgroupVersion];

/**
 * How cgroups are mounted: `unified` = pure v2 at the root; `hybrid` = v1 controllers at
 * `<root>/<controller>` plus v2 at `<root>/unified`; `legacy` = v1 only.
 */
export const CgroupMode = { Unified: 'unified', Hybrid: 'hybrid', Legacy: 'legacy' } as const;
export type CgroupMode = (typeof CgroupMode)[keyof typeof CgroupMode];

/** Where this host's cgroup hierarchies are and which one provides freezing and memory limits. */
export interface CgroupLayout {
  /** The cgroup mount root that was inspected (usually `/sys/fs/cgroup`). */
  readonly root: string;
  readonly mode: CgroupMode;
  /** Mount point of the v2 hierarchy, or null. */
  readonly v2: string | null;
  /** Controllers available in v2 (`<v2>/cgroup.controllers`); empty in typical hybrid mode. */
  readonly v2Controllers: readonly string[];
  /** Whether non-root v2 cgroups have `cgroup.freeze` (core v2 file, kernel >= 5.2). */
  readonly v2CanFreeze: boolean;
  /** Mount point of the v1 freezer controller, or null. */
  readonly v1Freezer: string | null;
  /** Mount point of the v1 memory controller, or null. */
  readonly v1Memory: string | null;
  /** The hierarchy used to freeze jobs: v2 when it can freeze, else the v1 freezer, else null. */
  readonly freezer: CgroupVersion | null;
  /** The hierarchy used for memory limits: v2 if its memory controller is available, else v1. */
  readonly memory: CgroupVersion | null;
}

/**
 * Inspect the cgroup mounts under `root` (synchronous, read-only; nothing is created).
 *
 * Pure v2 is recognised by `<root>/cgroup.controllers`; hybrid by `<root>/unified/cgroup.controllers`.
 * A v1 controller directory is recognised by its `tasks` file (v2 has none).
 */
export function detectCgroupLayout(root = '/sys/fs/cgroup'): CgroupLayout {
  let v2: string | null = null;
  if (existsSync(join(root, 'cgroup.controllers'))) v2 = root;
  else if (existsSync(join(root, 'unified', 'cgroup.controllers'))) v2 = join(root, 'unified');

  const v2Controllers = v2 === null ? [] : readWords(join(v2, 'cgroup.controllers'));
  const v2CanFreeze = v2 !== null && probeV2Freeze(v2);
  const v1 = (name: string): string | null => {
    if (v2 === root) return null;
    const dir = join(root, name);
    return existsSync(join(dir, 'tasks')) && !existsSync(join(dir, 'cgroup.controllers'))
      ? dir
      : null;
  };
  const v1Freezer = v1('freezer');
  const v1Memory = v1('memory');

  const mode: CgroupMode =
    v2 === root ? CgroupMode.Unified : v2 !== null ? CgroupMode.Hybrid : CgroupMode.Legacy;
  const freezer: CgroupVersion | null = v2CanFreeze
    ? CgroupVersion.V2
    : v1Freezer !== null
      ? CgroupVersion.V1
      : null;
  const memory: CgroupVersion | null = v2Controllers.includes('memory')
    ? CgroupVersion.V2
    : v1Memory !== null
      ? CgroupVersion.V1
      : null;
  return { root, mode, v2, v2Controllers, v2CanFreeze, v1Freezer, v1Memory, freezer, memory };
}

/**
 * Whether v2 cgroups can freeze. `cgroup.freeze` exists only in non-root cgroups, so look at an
 * existing one (our own, then the root's children); with none to look at, fall back to the kernel
 * version (the file appeared in 5.2). JobCgroup re-checks the file once it has created its own.
 */
function probeV2Freeze(v2: string): boolean {
  const candidates: string[] = [];
  const own = ownV2Path();
  if (own !== null && own !== '/') candidates.push(join(v2, own));
  try {
    for (const e of readdirSync(v2, { withFileTypes: true })) {
      if (e.isDirectory()) candidates.push(join(v2, e.name));
    }
  } catch {
    // Unreadable root: fall through to the version check.
  }
  for (const dir of candidates) {
    if (existsSync(join(dir, 'cgroup.procs'))) return existsSync(join(dir, 'cgroup.freeze'));
  }
  return kernelAtLeast(release(), 5, 2);
}

/** This process's v2 cgroup path (`0::/path` in /proc/self/cgroup), or null. */
function ownV2Path(): string | null {
  try {
    const line = readFileSync('/proc/self/cgroup', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('0::'));
    return line === undefined ? null : line.slice(3);
  } catch {
    return null;
  }
}

/** True when a `uname -r` string is at least `major.minor`. */
export function kernelAtLeast(rel: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  if (m === null) return false;
  const [maj, min] = [Number(m[1]), Number(m[2])];
  return maj > major || (maj === major && min >= minor);
}

function readWords(path: string): string[] {
  try {
    return readFileSync(path, 'utf8')
      .split(/\s+/)
      .filter((w) => w !== '');
  } catch {
    return [];
  }
}
