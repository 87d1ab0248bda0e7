/** The freezer of one cgroup directory: v2 `cgroup.freeze`/`cgroup.events`, v1 `freezer.state`. */
import { join } from 'node:path';
import { toDroverError, type DroverError } from '@drover/common';
import { pollUntil, readText, readTextSync, writeText, writeTextSync } from './cgroup-fs.js';
import { timedCut, type TimedFreeze } from './cut-timer.js';
import { cgroupFsError, CutMissedError } from './errors.js';
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
  await freezeCgroups([{ dir, version }], wait);
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

/** One cgroup of a joint freeze: its directory and the hierarchy its freezer is in. */
export interface FreezeTarget {
  readonly dir: string;
  readonly version: CgroupVersion;
}

/**
 * Freeze every cgroup of `targets` as one cut: each freeze is requested first, back to back (one
 * write per cgroup, nothing in between), then all are watched together until the kernel reports
 * each frozen. Returns, per target, the time (epoch ms, from `now`) it was first seen frozen.
 *
 * Why not freeze the cgroups one by one: each would wait for the kernel before the next is even
 * asked, and the cut would spread over their sum. Why not one write to a common parent: the
 * parent holds jobs that are not part of the cut.
 *
 * All or nothing: if a request or the wait fails (Timeout), every target is thawed again, so
 * none is left frozen or half-frozen, and the first error is thrown with the others attached.
 */
export async function freezeCgroups(
  targets: readonly FreezeTarget[],
  wait: FreezerWait,
  now: () => number = clockNow,
): Promise<number[]> {
  const frozenAt: (number | null)[] = targets.map(() => null);
  try {
    // In this thread, one after the other (see readTextSync): the requests microseconds apart,
    // and each time taken right after the kernel said so.
    for (const t of targets) requestFreezeSync(t.dir, t.version);
    await watchFrozen(targets, frozenAt, wait, now);
  } catch (err) {
    throw await thawedAfter(targets, err);
  }
  return frozenAt.map((t) => t!);
}

/** Options of {@link freezeCgroupsAt}. */
export interface ScheduledFreeze {
  /** The instant (epoch ms, `performance.timeOrigin + performance.now()` of this host). */
  atMs: number;
  /** Refused with CUT_MISSED, nothing frozen, if the instant has passed by more than this. */
  lateMs: number;
  /**
   * Told when the freezes were requested (same clock; at or a little after `atMs`): the first
   * write, and when each target's write returned (in the order given), the instant after which
   * none of its tasks runs user code (docs/CHECKPOINT.md, "What the skew measures").
   */
  onIssued?: (issuedAtMs: number, requestedAtMs: readonly number[]) => void;
}

/** How long the cut timer's thread watches the cgroups freeze before this thread takes over. */
const TIMED_WATCH_MS = 50;

/**
 * {@link freezeCgroups} at an instant: the freezes are requested back to back at `atMs` by the
 * cut timer's thread (cut-timer.ts), however busy this thread is then, and that thread watches
 * them freeze for a while (the times are taken there, right after the kernel said so); any still
 * freezing after that are watched here. Every time returned is at or after `atMs`.
 *
 * {@link CutMissedError} (CUT_MISSED, retryable) if the instant had passed by more than
 * `lateMs` when the thread got it: nothing was written. All or nothing as freezeCgroups.
 */
export async function freezeCgroupsAt(
  targets: readonly FreezeTarget[],
  at: ScheduledFreeze,
  wait: FreezerWait,
): Promise<number[]> {
  const frozenAt: (number | null)[] = targets.map(() => null);
  try {
    const r = await timedCut({
      atMs: at.atMs,
      lateMs: at.lateMs,
      targets: targets.map(timedFreezeOf),
      watchMs: Math.min(TIMED_WATCH_MS, wait.timeoutMs),
    });
    if (r.kind === 'missed') throw new CutMissedError(at.atMs, r.lateMs);
    if (r.kind === 'failed') {
      const path = timedFreezeOf(targets[r.index]!).write;
      throw cgroupFsError(Object.assign(new Error(r.message), { code: r.errno }), 'write', path);
    }
    at.onIssued?.(r.issuedAtMs, r.requestedAt);
    r.frozenAt.forEach((t, i) => (frozenAt[i] = t));
    await watchFrozen(targets, frozenAt, wait, clockNow);
  } catch (err) {
    // Missed: nothing was written, nothing to undo.
    if (err instanceof CutMissedError) throw err;
    throw await thawedAfter(targets, err);
  }
  return frozenAt.map((t) => t!);
}

/** This host's clock as a cut is timed on: epoch ms, sub-millisecond, the same in every thread. */
function clockNow(): number {
  return performance.timeOrigin + performance.now();
}

/** The cut timer's form of a freeze: the write and the file that says it is frozen. */
function timedFreezeOf(t: FreezeTarget): TimedFreeze {
  return t.version === 'v1'
    ? {
        write: join(t.dir, 'freezer.state'),
        value: 'FROZEN',
        watch: join(t.dir, 'freezer.state'),
        frozen: '^FROZEN$',
      }
    : {
        write: join(t.dir, 'cgroup.freeze'),
        value: '1',
        watch: join(t.dir, 'cgroup.events'),
        frozen: '^frozen 1$',
      };
}

/**
 * Watch `targets` (freezes requested) until each is frozen, filling in `frozenAt` (entries
 * already set are kept); a v1 freezer still FREEZING is nudged (v1Nudger).
 */
async function watchFrozen(
  targets: readonly FreezeTarget[],
  frozenAt: (number | null)[],
  wait: FreezerWait,
  now: () => number,
): Promise<void> {
  if (frozenAt.every((t) => t !== null)) return;
  const nudges = targets.map(() => v1Nudger());
  await pollUntil(
    async () => {
      const states = targets.map((t, i) =>
        frozenAt[i] === null ? readFreezerStateSync(t.dir, t.version) : 'frozen',
      );
      const at = now();
      states.forEach((s, i) => {
        if (s === 'frozen') frozenAt[i] ??= at;
        else if (s === 'freezing' && targets[i]!.version === 'v1') nudges[i]!(targets[i]!.dir);
      });
      return frozenAt.every((t) => t !== null);
    },
    {
      ...wait,
      // Read when the wait gives up: names the cgroups still not frozen then.
      get what() {
        const late = targets.filter((_, i) => frozenAt[i] === null).map((t) => t.dir);
        return `cgroup${late.length === 1 ? '' : 's'} ${late.join(', ')} did not freeze`;
      },
      path: targets[0]?.dir ?? '',
    },
  );
}

/** All or nothing: every target thawed again after `err`; the first error, the others attached. */
async function thawedAfter(targets: readonly FreezeTarget[], err: unknown): Promise<DroverError> {
  const first = toDroverError(err);
  for (const t of targets) {
    await requestFreeze(t.dir, t.version, false).catch((e: unknown) => first.suppress(e));
  }
  return first;
}

/**
 * How often a v1 freezer still FREEZING is asked again, and after how many asks it is thawed for a
 * moment and asked afresh.
 */
const V1_THAW_EVERY = 50;

/**
 * The v1 freezer can stay FREEZING for good: it signals the tasks it finds when FROZEN is written,
 * and a task that slips past (forked in that instant, or between a vfork and its exec, as a shell
 * running short commands does all the time) is never asked again. Writing FROZEN again asks every
 * task once more; a brief thaw now and then lets a tree that keeps forking settle first (what runc
 * does for the same reason). Returns the nudge for one cgroup; call it at each poll that still
 * reads FREEZING. v2's freezer needs none of this: it freezes new tasks as they join.
 */
function v1Nudger(): (dir: string) => void {
  let asks = 0;
  return (dir) => {
    asks += 1;
    const state = join(dir, 'freezer.state');
    if (asks % V1_THAW_EVERY === 0) writeTextSync(state, 'THAWED');
    writeTextSync(state, 'FROZEN');
  };
}

function requestFreezeSync(dir: string, version: CgroupVersion): void {
  if (version === 'v1') writeTextSync(join(dir, 'freezer.state'), 'FROZEN');
  else writeTextSync(join(dir, 'cgroup.freeze'), '1');
}

/** {@link readFreezerState} in the calling thread. */
function readFreezerStateSync(dir: string, version: CgroupVersion): FreezerState {
  if (version === 'v1') {
    const s = readTextSync(join(dir, 'freezer.state'));
    return s === 'FROZEN' ? 'frozen' : s === 'FREEZING' ? 'freezing' : 'thawed';
  }
  if (/^frozen 1$/m.test(readTextSync(join(dir, 'cgroup.events')))) return 'frozen';
  return readTextSync(join(dir, 'cgroup.freeze')) === '1' ? 'freezing' : 'thawed';
}

async function requestFreeze(dir: string, version: CgroupVersion, freeze: boolean): Promise<void> {
  if (version === 'v1') await writeText(join(dir, 'freezer.state'), freeze ? 'FROZEN' : 'THAWED');
  else await writeText(join(dir, 'cgroup.freeze'), freeze ? '1' : '0');
}
