/**
 * A cluster checkpoint's scheduled cut: the controller reads each host's clock a few times to
 * estimate its offset, chooses an instant a little ahead (a margin from the round trips it saw),
 * and sends each host that instant in its own clock; each agent's cut timer freezes the host's
 * jobs of the cut then (cgroup's cut-timer.ts), however busy the host is when the request lands.
 *
 * Why schedule it: freeze requests sent "now" land and get handled on each host whenever NATS and
 * that host's event loop get to them, tens of milliseconds apart on busy hosts; an instant agreed
 * in advance takes both out of the skew, leaving the clocks' estimate and the timer's wake-up.
 */
import { DroverError, ErrorCode, toDroverError } from '@drover/common';
import type { MemberItem } from '@drover/protocol';
import type { ClusterContext } from './cluster-context.js';

/** The knobs of a scheduled cut (docs/CHECKPOINT.md, "The scheduled cut"). */
export const CUT = {
  /** Exchanges per host to estimate its clock; the one with the shortest round trip is used. */
  samples: 5,
  /**
   * margin = 2 × the longest round trip + this: the agent loads its jobs and locks them before
   * it arms the cut, 20–40 ms on a loaded 2-CPU testbed host.
   */
  prepareMs: 50,
  /** The margin is never less than this (at 25 ms, loaded testbed hosts missed every first plan) ... */
  floorMs: 100,
  /** ... nor more than this (after a miss it doubles, up to this). */
  ceilingMs: 1000,
  /** Plans at most: a host that gets the request after the instant makes a later one. */
  attempts: 3,
} as const;

/** One exchange with a host: the controller's clock when it asked and when it heard, the host's. */
export interface ClockSample {
  sentMs: number;
  hostMs: number;
  receivedMs: number;
}

/** A host's clock as estimated: `offsetMs` = host minus controller; the exchange's round trip. */
export interface ClockEstimate {
  offsetMs: number;
  rttMs: number;
}

/**
 * The offset of a host's clock from a few exchanges (NTP's way): the host read its clock
 * somewhere between sending and hearing, taken as the middle; the exchange with the shortest
 * round trip is the one least spread by queues on the way, so its middle is the surest (the
 * error is at most half its round trip).
 */
export function estimateClock(samples: readonly ClockSample[]): ClockEstimate {
  let best: ClockSample | undefined;
  for (const s of samples) {
    if (!best || s.receivedMs - s.sentMs < best.receivedMs - best.sentMs) best = s;
  }
  if (!best) throw new RangeError('no clock samples');
  return {
    offsetMs: best.hostMs - (best.sentMs + best.receivedMs) / 2,
    rttMs: best.receivedMs - best.sentMs,
  };
}

/** Read a host's clock `n` times, one exchange after the other. */
export async function sampleClock(
  read: () => Promise<number>,
  now: () => number,
  n: number = CUT.samples,
): Promise<ClockSample[]> {
  const out: ClockSample[] = [];
  for (let i = 0; i < n; i++) {
    const sentMs = now();
    const hostMs = await read();
    out.push({ sentMs, hostMs, receivedMs: now() });
  }
  return out;
}

/**
 * How far ahead to put the instant, on plan `attempt` (1, 2, ...): twice the longest round trip
 * (a request takes about half of one to land; twice covers a slower one) plus the agent's
 * preparation, within the floor and ceiling, doubled after each miss.
 */
export function cutMargin(rttsMs: readonly number[], attempt: number): number {
  const base = Math.max(CUT.floorMs, 2 * Math.max(0, ...rttsMs) + CUT.prepareMs);
  return Math.min(CUT.ceilingMs, base * 2 ** (attempt - 1));
}

/** One host's part of a plan: the instant in its clock, and the estimate it came from. */
export interface HostCut extends ClockEstimate {
  atMs: number;
}

/** A scheduled cut: the instant (controller's clock), its margin, each host's instant. */
export interface PlannedCut {
  atMs: number;
  marginMs: number;
  hosts: Map<string, HostCut>;
}

/** The cut of plan `attempt`, from now (controller's clock) and each host's clock estimate. */
export function planCut(
  nowMs: number,
  clocks: ReadonlyMap<string, ClockEstimate>,
  attempt: number,
): PlannedCut {
  const marginMs = cutMargin(
    [...clocks.values()].map((c) => c.rttMs),
    attempt,
  );
  const atMs = nowMs + marginMs;
  const hosts = new Map(
    [...clocks].map(([host, c]) => [host, { ...c, atMs: atMs + c.offsetMs }] as const),
  );
  return { atMs, marginMs, hosts };
}

/**
 * Every host's clock estimate, the hosts at once (each host's exchanges one after the other).
 * Null when some host does not know `clock` (an agent from before scheduled cuts, in a rolling
 * upgrade): that cut is made unscheduled, as before.
 */
export async function readClocks(
  hosts: readonly string[],
  read: (host: string) => Promise<number>,
  now: () => number,
): Promise<Map<string, ClockEstimate> | null> {
  const estimates = await Promise.all(
    hosts.map(async (host) => {
      try {
        return [host, estimateClock(await sampleClock(() => read(host), now))] as const;
      } catch (err) {
        if (isUnknownOp(err)) return null;
        throw err;
      }
    }),
  );
  if (estimates.some((e) => e === null)) return null;
  return new Map(estimates.filter((e) => e !== null));
}

/** An agent's answer to an operation it does not know (an older agent). */
export function isUnknownOp(err: unknown): boolean {
  const e = toDroverError(err);
  return e.code === ErrorCode.NotFound && /unknown operation/.test(e.message);
}

/** The controller's clock a cut is planned on (epoch ms, sub-millisecond, as agents read theirs). */
export function controllerNow(): number {
  return performance.timeOrigin + performance.now();
}

/** How one host froze its jobs of the cut: when each froze (its clock), and its part of the plan. */
export interface FrozenHost {
  host: string;
  /** Requests it took: 1, or one per job for an agent from before `freeze-many`. */
  requests: number;
  frozen: { jobId: string; frozenAtMs: number; requestedAtMs?: number }[];
  /** Its part of the scheduled cut (null: frozen when the request came). */
  cut: HostCut | null;
  /** A scheduled cut: when its freezes were requested (its clock). */
  issuedAtMs: number | null;
}

/**
 * The barrier: every host's jobs of the cut frozen, at one instant when every host can schedule
 * it. Clocks first, then one plan after another: a host that got its request after the instant
 * froze nothing (CUT_MISSED); the hosts that made it are thawed and a later instant is planned
 * (the margin doubled), up to CUT.attempts; then the miss goes out as the error, like any other
 * failure to freeze (the caller's rollback thaws every job).
 */
export async function freezeCut(
  ctx: ClusterContext,
  groups: readonly (readonly [string, readonly MemberItem[]])[],
): Promise<{ hosts: FrozenHost[]; plan: PlannedCut | null; attempts: number }> {
  const now = ctx.now ?? controllerNow;
  const clocks = await readClocks(
    groups.map(([host]) => host),
    async (host) => (await ctx.agent(host, 'clock', {})).nowMs,
    now,
  );
  for (let attempt = 1; ; attempt++) {
    // Planned right before the requests go, all in this turn of the event loop.
    const plan = clocks && planCut(now(), clocks, attempt);
    const settled = await Promise.allSettled(
      groups.map(([host, ms]) => freezeHost(ctx, host, ms, plan?.hosts.get(host) ?? null)),
    );
    const made = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const errors = settled.flatMap((s) =>
      s.status === 'rejected' ? [toDroverError(s.reason)] : [],
    );
    const first = errors[0];
    if (first === undefined) return { hosts: made, plan, attempts: attempt };
    const missed = errors.every((e) => e.code === ErrorCode.CutMissed);
    if (!plan || !missed || attempt >= CUT.attempts) throw first;
    ctx.log.warn('a host missed the cut; planning a later one', {
      attempt,
      marginMs: plan.marginMs,
      err: first,
    });
    // A cut is every job frozen at one instant: the hosts that made this one thaw first.
    await Promise.all(
      made.flatMap((h) => h.frozen.map((f) => ctx.agent(h.host, 'thaw', { jobId: f.jobId }))),
    );
  }
}

/**
 * Freeze the jobs of the cut on one host with one request (`freeze-many`: all of them together, all
 * or nothing), at its instant of the plan if there is one. A job frozen before (a resumed
 * operation) keeps its first time.
 */
async function freezeHost(
  ctx: ClusterContext,
  host: string,
  members: readonly MemberItem[],
  cut: HostCut | null,
): Promise<FrozenHost> {
  let times: number[];
  let requests = 1;
  let issuedAtMs: number | null = null;
  let requested: (number | undefined)[] = [];
  try {
    const r = await ctx.agent(host, 'freeze-many', {
      jobIds: members.map((m) => m.jobId),
      ...(cut ? { atMs: cut.atMs } : {}),
    });
    times = r.jobs.map((j) => j.frozenAtMs);
    requested = r.jobs.map((j) => j.requestedAtMs);
    issuedAtMs = r.issuedAtMs ?? null;
  } catch (err) {
    if (!isUnknownOp(err)) throw toDroverError(err);
    // An agent from before `freeze-many` (in a rolling upgrade): one request per job, now.
    requests = members.length;
    cut = null;
    times = await Promise.all(
      members.map(async (m) => (await ctx.agent(host, 'freeze', { jobId: m.jobId })).frozenAtMs),
    );
  }
  const frozen = members.map((m, i) => {
    const t = m.frozenAtMs ?? times[i];
    if (t === undefined) {
      throw new DroverError(ErrorCode.Internal, `${host} did not say when ${m.jobId} froze`, {
        details: { host, jobId: m.jobId },
      });
    }
    // A job frozen before (a resumed operation) has no request in this cut.
    const r = m.frozenAtMs === null ? requested[i] : undefined;
    return { jobId: m.jobId, frozenAtMs: t, ...(r === undefined ? {} : { requestedAtMs: r }) };
  });
  return { host, requests, frozen, cut, issuedAtMs };
}
