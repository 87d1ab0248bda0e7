/** Placement owns the choice of a destination host for a job: which hosts fit, which one wins, and why. */
import { DroverError, ErrorCode } from '@drover/common';
import type { AgentInfo, JobState } from '@drover/protocol';

/** What the controller knows of one host, as placement reads it. */
export interface HostView {
  host: string;
  /** The host's last heartbeat. */
  info: AgentInfo;
  cordoned: boolean;
  reachable: boolean;
  /** Clock time (ms) of the last heartbeat. */
  lastSeenMs: number;
}

/** What a job needs from its destination. */
export interface PlacementRequest {
  /** Memory the job will take on the destination. */
  memoryBytes: number;
  /** CPU flags the destination must have (the job may use them). */
  cpuFlags: readonly string[];
  /** The destination must run CRIU's lazy-pages daemon (post-copy). */
  needsLazyPages?: boolean;
  /** Hosts that must not be chosen (the job's current host, hosts already planned full). */
  exclude?: readonly string[];
  /**
   * Only these hosts may be chosen, in this order of preference (`--to H1 --to H2`): the first
   * one that fits wins. Every other host is refused as "not a requested destination".
   */
  candidates?: readonly string[];
  /** Jobs already planned onto hosts (by host name) but not yet in their heartbeats. */
  plannedJobs?: Readonly<Record<string, number>>;
  /** Memory already planned onto hosts (by host name) but not yet in their heartbeats. */
  plannedMemoryBytes?: Readonly<Record<string, number>>;
  /** Memory to leave free on every destination. Default 0. */
  reserveMemoryBytes?: number;
  /** Clock time (ms, same clock as `HostView.lastSeenMs`), to say how long a host has been silent. */
  nowMs?: number;
}

/** Why one host was or was not chosen. */
export interface Verdict {
  host: string;
  fits: boolean;
  /** Free memory after placement per job on the host, this one included (bytes); 0 if it does not fit. */
  score: number;
  /** Human reasons it was refused, e.g. "cordoned", "needs 2.0 GiB, 900 MiB free". Empty if it fits. */
  reasons: string[];
}

/** The chosen host, why, and the verdicts that were weighed. */
export interface Placement {
  host: string;
  explanation: string;
  verdicts: Verdict[];
}

/** One job of a batch (a drain). */
export interface PlanRequest {
  jobId: string;
  req: PlacementRequest;
}

/** Job states that occupy a host (the agent's LIVE_STATES); exited, lost, migrated ones do not. */
const LIVE: JobState[] = ['starting', 'running', 'frozen', 'checkpointing', 'migrating'];
const OCCUPYING: ReadonlySet<string> = new Set(LIVE);
/** Refused hosts named in an error message; all of them are in `details.verdicts`. */
const MAX_LISTED = 20;
const [MiB, GiB] = [2 ** 20, 2 ** 30];
const UNKNOWN = 'unknown host (no heartbeat seen)';

/** Jobs that occupy a host according to its heartbeat. */
export function occupyingJobs(info: AgentInfo): number {
  return info.jobs.reduce((n, j) => n + (OCCUPYING.has(j.state) ? 1 : 0), 0);
}

/** "900 MiB" below 1 GiB, "9.1 GiB" from there. */
export function formatBytes(bytes: number): string {
  const sign = bytes < 0 ? '-' : '';
  const a = Math.abs(bytes);
  return a >= GiB ? `${sign}${(a / GiB).toFixed(1)} GiB` : `${sign}${Math.round(a / MiB)} MiB`;
}

/** One host with what placement reads precomputed; slots are sorted by name (the tie-break). */
interface Slot {
  view: HostView;
  name: string;
  flags: ReadonlySet<string>;
  jobs: number;
  available: number;
}

/** Per slot: batch-planned memory and jobs; `free` = available − memory and `count` = jobs + batch jobs, as `figures` computes them; `blocked` = excluded by the current request. */
interface Lanes {
  memory: Float64Array;
  jobs: Float64Array;
  free: Float64Array;
  count: Float64Array;
  blocked: Uint8Array;
}

/** A validated request, its candidates without repeats, and its reserve. */
interface Ctx {
  req: PlacementRequest;
  candidates: readonly string[] | null;
  reserve: number;
}

const invalid = (message: string): DroverError =>
  new DroverError(ErrorCode.InvalidArgument, `placement: ${message}`);

function slotsOf(hosts: readonly HostView[]): { slots: Slot[]; byName: Map<string, number> } {
  const slots = hosts
    .map(({ host, info }, i) => ({
      view: hosts[i]!,
      name: host,
      flags: new Set(info.cpuFlags),
      jobs: occupyingJobs(info),
      available: info.memory.availableBytes,
    }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const byName = new Map<string, number>();
  slots.forEach((s, i) => {
    if (byName.has(s.name)) throw invalid(`host ${s.name} is listed twice`);
    byName.set(s.name, i);
  });
  return { slots, byName };
}

function contextOf(req: PlacementRequest): Ctx {
  const reserve = req.reserveMemoryBytes ?? 0;
  for (const [what, v] of Object.entries({ memoryBytes: req.memoryBytes, reserve })) {
    if (!Number.isFinite(v) || v < 0) throw invalid(`${what} must be a number >= 0, got ${v}`);
  }
  return { req, reserve, candidates: req.candidates ? [...new Set(req.candidates)] : null };
}

/** Free memory and job count of a slot for this request, before the job lands. */
function figures(s: Slot, i: number, ctx: Ctx, lanes: Lanes | null) {
  const batch = lanes?.memory[i] ?? 0;
  const own = ctx.req.plannedMemoryBytes?.[s.name] ?? 0;
  const jobs = s.jobs + (lanes?.jobs[i] ?? 0) + (ctx.req.plannedJobs?.[s.name] ?? 0);
  const free = s.available - batch - ctx.reserve - own;
  return { planned: batch + own, jobs, free, freeAfter: free - ctx.req.memoryBytes };
}

/** The ranking: free memory after placement per job on the host, this one included. */
const scoreOf = (freeAfter: number, jobs: number): number => freeAfter / (jobs + 1);

const figuresText = (f: { freeAfter: number; jobs: number }): string =>
  `${formatBytes(f.freeAfter)} free after, ${f.jobs} job${f.jobs === 1 ? '' : 's'}`;

const reasonsText = (vs: readonly Verdict[]): string =>
  vs.map((v) => `${v.host}: ${v.reasons.join(', ')}`).join('; ');

/** Reasons that do not depend on memory. */
function staticReasons({ view, name, flags }: Slot, ctx: Ctx): string[] {
  const { req } = ctx;
  const r: string[] = [];
  if (req.exclude?.includes(name) === true) r.push('excluded');
  if (ctx.candidates?.includes(name) === false) r.push('not a requested destination');
  if (!view.reachable) {
    const at = new Date(view.lastSeenMs).toISOString();
    const ago = req.nowMs === undefined ? null : Math.round((req.nowMs - view.lastSeenMs) / 1000);
    r.push(
      ago === null
        ? `unreachable (last heartbeat ${at})`
        : `unreachable (no heartbeat for ${ago} s)`,
    );
  }
  if (view.cordoned) r.push('cordoned');
  if (req.needsLazyPages === true && !view.info.criu.lazyPages) r.push('no lazy pages (post-copy)');
  const missing = req.cpuFlags.filter((f) => !flags.has(f));
  if (missing.length > 0) r.push(`lacks CPU flags ${missing.join(' ')}`);
  return r;
}

function verdictOf(s: Slot, i: number, ctx: Ctx, lanes: Lanes | null): Verdict {
  const reasons = staticReasons(s, ctx);
  const f = figures(s, i, ctx, lanes);
  if (f.freeAfter < 0) {
    const parts = [`${formatBytes(s.available)} available`];
    if (f.planned !== 0) parts.push(`${formatBytes(f.planned)} planned`);
    if (ctx.reserve !== 0) parts.push(`${formatBytes(ctx.reserve)} reserved`);
    const why = parts.length > 1 ? ` (${parts.join(', ')})` : '';
    const free = formatBytes(Math.max(0, f.free));
    reasons.push(`needs ${formatBytes(ctx.req.memoryBytes)}, ${free} free${why}`);
  }
  const fits = reasons.length === 0;
  return { host: s.name, fits, score: fits ? scoreOf(f.freeAfter, f.jobs) : 0, reasons };
}

/** Every verdict of a request: requested destinations first, in their order, then the rest by name. */
function allVerdicts(slots: Slot[], byName: Map<string, number>, ctx: Ctx, lanes: Lanes | null) {
  const verdicts = (ctx.candidates ?? []).map((c): Verdict => {
    const i = byName.get(c);
    return i === undefined
      ? { host: c, fits: false, score: 0, reasons: [UNKNOWN] }
      : verdictOf(slots[i]!, i, ctx, lanes);
  });
  slots.forEach((s, i) => {
    if (ctx.candidates?.includes(s.name) !== true) verdicts.push(verdictOf(s, i, ctx, lanes));
  });
  return verdicts;
}

/** Why the winner won when destinations were requested: the ones before it were refused. */
const candidateNote = (before: readonly Verdict[]): string =>
  before.length === 0
    ? '; first requested destination'
    : `; first requested destination that fits (${reasonsText(before)})`;

/** The refusal message body: why each host was refused (every verdict is a refusal here). */
function refusalText(verdicts: readonly Verdict[]): string {
  if (verdicts.length === 0) return 'no hosts are known';
  const more = verdicts.length - MAX_LISTED;
  return reasonsText(verdicts.slice(0, MAX_LISTED)) + (more > 0 ? `; and ${more} more` : '');
}

function noFit(ctx: Ctx, verdicts: Verdict[], why: string, jobId?: string): DroverError {
  const job = jobId === undefined ? 'the job' : `job ${jobId}`;
  const message = `no host fits ${job} (needs ${formatBytes(ctx.req.memoryBytes)}): ${why}`;
  const details = jobId === undefined ? { verdicts } : { jobId, verdicts };
  return new DroverError(ErrorCode.FailedPrecondition, message, { details });
}

/**
 * Choose the destination for one job. Among hosts that fit, the highest score wins (free memory
 * after placement per job); ties go to the smaller host name. With `candidates`, the first one
 * that fits wins. `verdicts` has one entry per host (and per unknown candidate).
 * @throws DroverError FAILED_PRECONDITION, `details.verdicts`, when no host fits; the message says
 *   why each host was refused. INVALID_ARGUMENT for a malformed request or a host listed twice.
 */
export function place(hosts: readonly HostView[], req: PlacementRequest): Placement {
  const planner = new Planner(hosts);
  const ctx = contextOf(req);
  const verdicts = planner.verdicts(ctx);
  const fits = verdicts.filter((v) => v.fits).length;
  if (fits === 0) throw noFit(ctx, verdicts, refusalText(verdicts));
  const { host, explanation } = planner.plan(undefined, ctx) as Placement;
  const refused = verdicts.length - fits;
  const note = ctx.candidates === null && refused > 0;
  const tail = note ? `; ${refused} of ${verdicts.length} hosts refused` : '';
  return { host, explanation: explanation + tail, verdicts };
}

/** The best and runner-up offered (score, slot index); equal scores go to the smaller index (name). */
class Top2 {
  best = -1;
  second = -1;
  #scores = [-Infinity, -Infinity];
  offer(score: number, i: number): void {
    const [b, s] = this.#scores as [number, number];
    if (score > b || (score === b && i < this.best)) {
      [this.second, this.best, this.#scores] = [this.best, i, [score, b]];
    } else if (score > s || (score === s && i < this.second)) {
      [this.second, this.#scores] = [i, [b, score]];
    }
  }
}

/**
 * The hosts passing one request shape's static checks, bucketed by job count, each bucket sorted
 * by free memory (most first) then index. In a bucket the score grows with free memory, so a job
 * reads at most two hosts per bucket, and placing one re-files one host.
 */
class Group {
  readonly #buckets = new Map<number, number[]>();
  readonly isMember: Uint8Array;
  constructor(
    readonly members: Int32Array,
    private readonly lanes: Lanes,
  ) {
    this.isMember = new Uint8Array(lanes.free.length);
    for (const i of members) this.add(i);
  }
  /** Call before the lanes of `i` change, and `add` after. */
  remove(i: number): void {
    const list = this.#buckets.get(this.lanes.count[i]!)!;
    list.splice(list.indexOf(i), 1);
    if (list.length === 0) this.#buckets.delete(this.lanes.count[i]!);
  }
  add(i: number): void {
    const { free, count } = this.lanes;
    this.isMember[i] = 1;
    let list = this.#buckets.get(count[i]!);
    if (list === undefined) this.#buckets.set(count[i]!, (list = []));
    let [lo, hi] = [0, list.length]; // binary search: most free first, then smaller index
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const m = list[mid]!;
      if (free[m]! > free[i]! || (free[m] === free[i] && m < i)) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, i);
  }
  /** Offer each bucket's best two fitting, unblocked hosts; same arithmetic as `figures`/`scoreOf`. */
  offerBest(top: Top2, reserve: number, m: number): void {
    const { free, blocked } = this.lanes;
    for (const [c, list] of this.#buckets) {
      for (let k = 0, offered = 0; k < list.length && offered < 2; k++) {
        const i = list[k]!;
        if (blocked[i] === 1) continue;
        const freeAfter = free[i]! - reserve - m;
        if (freeAfter < 0) break; // the rest of the bucket has less free memory
        top.offer(freeAfter / (c + 1), i);
        offered++;
      }
    }
  }
}

/** One batch being planned: the hosts, what is planned on them so far, and cached refusals. */
class Planner {
  readonly #slots: Slot[];
  readonly #byName: Map<string, number>;
  readonly #lanes: Lanes;
  readonly #groups = new Map<string, Group>();
  // A refusal stays valid until something is placed (planned memory only grows), so identical
  // refused requests in a row share one verdict list: an all-refused drain stays O(jobs + hosts).
  #generation = 0;
  readonly #refusals = new Map<string, { verdicts: Verdict[]; why: string }>();

  constructor(hosts: readonly HostView[]) {
    ({ slots: this.#slots, byName: this.#byName } = slotsOf(hosts));
    const n = this.#slots.length;
    this.#lanes = {
      ...{ memory: new Float64Array(n), jobs: new Float64Array(n), blocked: new Uint8Array(n) },
      free: Float64Array.from(this.#slots, (s) => s.available),
      count: Float64Array.from(this.#slots, (s) => s.jobs),
    };
  }

  /** Every host's verdict on `ctx` as planned so far. */
  verdicts(ctx: Ctx): Verdict[] {
    return allVerdicts(this.#slots, this.#byName, ctx, this.#lanes);
  }

  /** The group of a request shape (lazy pages, CPU flags); cordon and reachability apply to all. */
  #group(ctx: Ctx): Group {
    const key = `${ctx.req.needsLazyPages === true}|${ctx.req.cpuFlags.join(' ')}`;
    let g = this.#groups.get(key);
    if (g === undefined) {
      const shape: Ctx = { req: { ...ctx.req, exclude: [] }, candidates: null, reserve: 0 };
      const ok = (i: number): boolean => staticReasons(this.#slots[i]!, shape).length === 0;
      g = new Group(Int32Array.from(this.#slots.keys()).filter(ok), this.#lanes);
      this.#groups.set(key, g);
    }
    return g;
  }

  /** Choose a host for one job and count it there; the refusal is returned, not thrown. */
  plan(jobId: string | undefined, ctx: Ctx): Placement | DroverError {
    const { req } = ctx;
    const [slots, lanes, top] = [this.#slots, this.#lanes, new Top2()];
    const own = req.plannedJobs !== undefined || req.plannedMemoryBytes !== undefined;
    const verdicts: Verdict[] = [];
    let explanation = '';
    if (ctx.candidates !== null) {
      for (const c of ctx.candidates) {
        const i = this.#byName.get(c);
        const v = i === undefined ? undefined : verdictOf(slots[i]!, i, ctx, lanes);
        verdicts.push(v ?? { host: c, fits: false, score: 0, reasons: [UNKNOWN] });
        if (i === undefined || v?.fits !== true) continue;
        top.best = i;
        const note = candidateNote(verdicts.slice(0, -1));
        explanation = `${c}: ${figuresText(figures(slots[i]!, i, ctx, lanes))}${note}`;
        break;
      }
    } else {
      const excluded = (req.exclude ?? []).flatMap((x) => this.#byName.get(x) ?? []);
      for (const i of excluded) lanes.blocked[i] = 1;
      const g = this.#group(ctx);
      if (!own) g.offerBest(top, ctx.reserve, req.memoryBytes);
      for (const i of own ? g.members : []) {
        const f = figures(slots[i]!, i, ctx, lanes);
        if (lanes.blocked[i] === 0 && f.freeAfter >= 0) top.offer(scoreOf(f.freeAfter, f.jobs), i);
      }
      for (const i of excluded) lanes.blocked[i] = 0;
      // Winner and runner-up passed every static check: their verdicts are figures only.
      const parts = [top.best, top.second]
        .filter((i) => i >= 0)
        .map((i, k) => {
          const { name } = slots[i]!;
          const f = figures(slots[i]!, i, ctx, lanes);
          verdicts.push({
            host: name,
            fits: true,
            score: scoreOf(f.freeAfter, f.jobs),
            reasons: [],
          });
          return `${name}${k === 0 ? ':' : ' had'} ${figuresText(f)}`;
        });
      explanation = parts.length === 1 ? `${parts[0]}; the only host that fits` : parts.join('; ');
    }
    const { best } = top;
    if (best < 0) return this.#refuse(jobId, ctx, own);
    const groups = [...this.#groups.values()].filter((g) => g.isMember[best] === 1);
    for (const g of groups) g.remove(best);
    lanes.memory[best]! += req.memoryBytes;
    lanes.jobs[best]! += 1;
    // Recomputed, not decremented, so `free` stays exactly what `figures` computes.
    lanes.free[best] = slots[best]!.available - lanes.memory[best]!;
    lanes.count[best] = slots[best]!.jobs + lanes.jobs[best]!;
    for (const g of groups) g.add(best);
    this.#generation++;
    return { host: slots[best]!.name, explanation, verdicts };
  }

  #refuse(jobId: string | undefined, ctx: Ctx, own: boolean): DroverError {
    const { req } = ctx;
    const shape = [
      req.memoryBytes,
      ctx.reserve,
      req.needsLazyPages,
      req.cpuFlags,
      req.exclude,
      req.nowMs,
    ];
    const key = own ? null : JSON.stringify([this.#generation, ctx.candidates, ...shape]);
    let refused = key === null ? undefined : this.#refusals.get(key);
    if (refused === undefined) {
      const verdicts = this.verdicts(ctx);
      refused = { verdicts, why: refusalText(verdicts) };
      if (key !== null) this.#refusals.set(key, refused);
    }
    return noFit(ctx, refused.verdicts, refused.why, jobId);
  }
}

/**
 * Place a batch of jobs (a drain), counting the memory and jobs already planned in the batch on top
 * of each request's own `plannedJobs`/`plannedMemoryBytes`. Plans the largest jobs first (fewer
 * refusals when memory is tight); ties keep input order. Every job gets a Placement or the
 * FAILED_PRECONDITION DroverError that `place` would have thrown at that point of the plan.
 *
 * Unlike `place`, a Placement here carries only the verdicts of the winner and its runner-up (a
 * full list per job would be jobs × hosts objects); a refusal carries every host's verdict.
 * About O(jobs × (job-count buckets + log hosts)); a request with its own planned maps costs O(hosts).
 * @throws DroverError INVALID_ARGUMENT for a repeated jobId, a malformed request or a host listed twice.
 */
export function planMany(
  hosts: readonly HostView[],
  requests: readonly PlanRequest[],
): Map<string, Placement | DroverError> {
  const planner = new Planner(hosts);
  const ctxs = requests.map((r) => contextOf(r.req));
  const results = new Map<string, Placement | DroverError>();
  const ids = new Set(requests.map((r) => r.jobId));
  if (ids.size < requests.length) throw invalid('a job is listed twice');
  const sizes = Float64Array.from(requests, (r) => r.req.memoryBytes);
  const order = Array.from(requests.keys()).sort((a, b) => sizes[b]! - sizes[a]! || a - b);
  const planned = new Array<Placement | DroverError>(requests.length);
  for (const k of order) planned[k] = planner.plan(requests[k]!.jobId, ctxs[k]!);
  requests.forEach((r, k) => results.set(r.jobId, planned[k]!));
  return results;
}

/**
 * Where work goes: the host asked for (`check` refuses one that may not take it), else the one
 * `placeIt` picks; with why, as the operation records it.
 */
export async function pickHost(
  asked: string | undefined,
  check: (host: string) => unknown,
  placeIt: () => Placement | Promise<Placement>,
): Promise<{ host: string; explanation: string }> {
  if (asked === undefined) return placeIt();
  await check(asked);
  return { host: asked, explanation: `${asked}: asked for` };
}
