/** The freezer of one cgroup directory: v2 `cgroup.freeze`/`cgroup.events`, v1 `freezer.state`. */
import { join } from 'node:path';
import { toDroverError } from '@drover/common';
import { pollUntil, readText, writeText } from './cgroup-fs.js';
import type { CgroupVersion } from './hierarchy.js';

/** What the kernel reports: `freezing` means asked to freeze but not every task has stopped yet. */
export const FreezerState = { Thawed: 'thawed', Freezing: 'freezing', Frozen: 'frozen' } as const;
export type FreezerState = (typeof FreezerState)[keyof typeof FreezerState];

/** How long to wait for the kernel to reach a freezer state, and how often to look. */
export interface FreezerWait {
  timeoutMs: number;
  intervalMs: number;
}

/** Read the effective freezer state of `dir` in hierarchy `version`. */
export async function readFreezerState(dir: string, version: CgroupVersion): Promise<FreezerState> {
  if (version === 'v1') {
    // THAWED | FREEZING | FROZEN; the kernel recomputes it on every read.
    const s = await readText(join(dir, 'freezer.state'));
    return s === 'FROZEN' ? 'frozen' : s === 'FREEZING' ? 'freezing' : 'thawed';
  }
  // `frozen 1` in cgroup.events is the effective state (it is also 1 when an ancestor is frozen);
  // cgroup.freeze is what was asked for.
  const frozen = /^frozen 1$/m.test(await readText(join(dir, 'cgroup.events')));
  if (frozen) return 'frozen';
  const wanted = (await readText(join(dir, 'cgroup.freeze'))) === '1';
  return wanted ? 'freezing' : 'thawed';
}

/**
 * Freeze `dir` and wait until the kernel reports every task frozen. On timeout the cgroup is thawed
 * again (so it is never left half-frozen) and a retryable Timeout error is thrown.
 */
export async function freezeCgroup(
  dir: string,
  version: CgroupVersion,
  wait: FreezerWait,
): Promise<void> {
  await requestFreeze(dir, version, true);
  try {
    await pollUntil(async () => (await readFreezerState(dir, version)) === 'frozen', {
      ...wait,
      what: `cgroup ${dir} did not freeze`,
      path: dir,
    });
  } catch (err) {
    const first = toDroverError(err);
    try {
      await requestFreeze(dir, version, false);
    } catch (rollback) {
      first.suppress(rollback);
    }
    throw first;
  }
}

/** Thaw `dir` and wait until the kernel reports it thawed (Timeout if an ancestor keeps it frozen). */
export async function thawCgroup(
  dir: string,
  version: CgroupVersion,
  wait: FreezerWait,
): Promise<void> {
  await requestFreeze(dir, version, false);
  await pollUntil(async () => (await readFreezerState(dir, version)) === 'thawed', {
    ...wait,
    what: `cgroup ${dir} did not thaw`,
    path: dir,
  });
}

async function requestFreeze(dir: string, version: CgroupVersion, freeze: boolean): Promise<void> {
  if (version === 'v1') await writeText(join(dir, 'freezer.state'), freeze ? 'FROZEN' : 'THAWED');
  else await writeText(join(dir, 'cgroup.freeze'), freeze ? '1' : '0');
}
