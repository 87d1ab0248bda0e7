/** Memory limits and usage of one cgroup directory (v2 `memory.max`, v1 `memory.limit_in_bytes`). */
import { join, relative, sep } from 'node:path';
import { readText, writeText } from './cgroup-fs.js';
import type { CgroupVersion } from './hierarchy.js';

/** Limits at or above this many bytes mean "unlimited" (v1 reports 0x7FFFFFFFFFFFF000). */
const UNLIMITED_FLOOR = 2n ** 62n;

const files = {
  v1: { limit: 'memory.limit_in_bytes', usage: 'memory.usage_in_bytes', none: '-1' },
  v2: { limit: 'memory.max', usage: 'memory.current', none: 'max' },
} as const;

/** Set the limit (`null` = unlimited). v1 rounds down to whole pages; EBUSY means usage is above it. */
export async function writeMemoryLimit(
  dir: string,
  version: CgroupVersion,
  bytes: number | null,
): Promise<void> {
  const f = files[version];
  await writeText(join(dir, f.limit), bytes === null ? f.none : String(bytes));
}

/** The limit in effect, in bytes, or null when unlimited. */
export async function readMemoryLimit(dir: string, version: CgroupVersion): Promise<number | null> {
  const text = await readText(join(dir, files[version].limit));
  if (text === 'max') return null;
  const n = BigInt(text);
  return n >= UNLIMITED_FLOOR ? null : Number(n);
}

/** Bytes currently charged to the cgroup (and its descendants). */
export async function readMemoryUsage(dir: string, version: CgroupVersion): Promise<number> {
  return Number(await readText(join(dir, files[version].usage)));
}

/**
 * Enable the v2 memory controller for children of every cgroup from `v2root` down to `parentDir`
 * (`+memory` in each `cgroup.subtree_control`), so the job directory gets `memory.max`.
 */
export async function enableV2Memory(v2root: string, parentDir: string): Promise<void> {
  const rel = relative(v2root, parentDir);
  const chain = [v2root];
  let cur = v2root;
  for (const part of rel === '' ? [] : rel.split(sep)) chain.push((cur = join(cur, part)));
  for (const dir of chain) {
    const ctl = join(dir, 'cgroup.subtree_control');
    if (!(await readText(ctl)).split(/\s+/).includes('memory')) await writeText(ctl, '+memory');
  }
}
