/**
 * Drain: cordon a host and move every job off it with bounded parallelism, recording each job's
 * outcome in the operation. The operation is reconciled, not replayed: a controller that takes
 * over an unfinished drain looks where each job is now and moves only what is still on the host.
 */
import type { StateStore } from '@drover/bus';
import {
  DroverError,
  ErrorCode,
  forEachLimit,
  mapLimit,
  newId,
  retry,
  toDroverError,
  type Logger,
} from '@drover/common';
import type { DrainItem, OperationRecord } from '@drover/protocol';
import { newOperation } from './op-record.js';
import { planMany, type HostView } from './placement.js';

/** Preflights of a drain's jobs in flight at once (to one agent). */
const PREFLIGHT_CONCURRENCY = 8;

/**
 * Moves of one job a drain tries before giving up, when the failure is transient (an agent that
 * blinked, a link that dropped: the migration rolled back and the job runs where it was).
 */
export const DRAIN_ATTEMPTS = 3;
/** Pause before the next try: this many ms times the tries so far. */
const RETRY_PAUSE_MS = 2000;

/** Errors that another try cannot cure: the job cannot move, or the request is wrong. */
const PERMANENT: readonly string[] = [
  ErrorCode.InvalidArgument,
  ErrorCode.NotFound,
  ErrorCode.FailedPrecondition,
  ErrorCode.AlreadyExists,
  ErrorCode.PermissionDenied,
];

/** What a drain needs from the controller. */
export interface DrainContext {
  ops: Pick<StateStore<OperationRecord>, 'get' | 'put' | 'mutate'>;
  log: Logger;
  hosts(): HostView[];
  cordon(host: string): Promise<void>;
  /** Live jobs on `host` (id, name, memory in use). */
  jobsOn(host: string): Promise<{ id: string; name: string; memoryBytes: number }[]>;
  /** Where the job is now and in what state (null: nowhere). */
  whereIs(jobId: string): Promise<{ host: string; state: string } | null>;
  /** Why the job cannot be checkpointed (empty: it can). */
  blockers(host: string, jobId: string): Promise<string[]>;
  /** Pause between tries (tests shorten it). */
  retryPauseMs?: number;
  /** Ask `source` to migrate `jobId` to `destination`; resolves with the migration's outcome. */
  migrate(
    source: string,
    jobId: string,
    destination: string,
  ): Promise<{ migrationId: string; frozenMs: number }>;
}

/** Start a drain of `host`; resolves when every job has an outcome. */
export async function drainHost(
  ctx: DrainContext,
  host: string,
  parallel: number,
): Promise<OperationRecord> {
  await ctx.cordon(host);
  const jobs = await ctx.jobsOn(host);
  const op = newOperation('drain', newId('op'), { request: { host, parallel }, host, items: [] });
  // Jobs that cannot move are reported, not silently skipped. Their preflights run several at
  // a time: one after another, a 100-job host spent most of its planning time waiting on them.
  const reasons = await mapLimit(jobs, PREFLIGHT_CONCURRENCY, (j) => ctx.blockers(host, j.id));
  const movable: typeof jobs = [];
  for (const [i, j] of jobs.entries()) {
    const why = reasons[i]!;
    const item: DrainItem = {
      jobId: j.id,
      name: j.name,
      state: 'pending',
      destination: null,
      reason: null,
      migrationId: null,
      frozenMs: null,
    };
    if (why.length)
      Object.assign(item, {
        state: 'skipped',
        reason: why.join('; '),
        code: ErrorCode.FailedPrecondition,
      });
    else movable.push(j);
    op.items.push(item);
  }
  const plan = planMany(
    ctx.hosts(),
    movable.map((j) => ({
      jobId: j.id,
      req: { memoryBytes: j.memoryBytes, cpuFlags: [], exclude: [host] },
    })),
  );
  for (const item of op.items) {
    const p = plan.get(item.jobId);
    if (p instanceof DroverError)
      Object.assign(item, { state: 'skipped', reason: p.message, code: p.code });
    else if (p) item.destination = p.host;
  }
  await ctx.ops.put(op.opId, op);
  return runDrain(ctx, op.opId, parallel);
}

/**
 * The destination that refused a job for room (memory, or tmpfs for stop-copy's images: the
 * agent's admission says `reason: 'capacity'` and names itself), found along the error's causes;
 * null for any other failure. Placement counts a job's memory once, a stop-copy destination needs
 * it twice while restoring, so another host may well take the job.
 */
export function refusedForRoom(err: unknown): string | null {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; depth++) {
    const d = (e as DroverError).details as { reason?: unknown; host?: unknown } | undefined;
    if (d?.reason === 'capacity' && typeof d.host === 'string') return d.host;
    e = e.cause;
  }
  return null;
}

/** Carry an unfinished drain to its end (used by `drainHost` and by a controller taking over). */
export async function runDrain(
  ctx: DrainContext,
  opId: string,
  parallel: number,
): Promise<OperationRecord> {
  const first = await ctx.ops.get(opId);
  if (!first) throw new DroverError(ErrorCode.NotFound, `no operation ${opId}`);
  const host = first.value.host!;
  const todo = first.value
    .items!.filter((i) => i.state === 'pending' || i.state === 'moving')
    .map((i) => i.jobId);
  const update = (jobId: string, patch: Partial<DrainItem>): Promise<unknown> =>
    ctx.ops.mutate(opId, (cur) => {
      if (!cur) return null;
      const items = cur.items!.map((i) => (i.jobId === jobId ? { ...i, ...patch } : i));
      return { ...cur, items, updatedAt: new Date().toISOString() };
    });
  await forEachLimit(todo, parallel, async (jobId) => {
    const item = await itemOf(ctx, opId, jobId);
    // The migration rolled back (or never started): the job still runs on the drained host. A
    // transient failure is tried again, on a host that can take it.
    const failed = (err: unknown, attempt: number, last: boolean): Promise<unknown> => {
      const e = toDroverError(err);
      return update(jobId, {
        state: last ? 'failed' : 'pending',
        reason: e.message,
        code: e.code,
        attempts: attempt,
      });
    };
    let attempt = 0;
    // Destinations that refused this job for room: the next try places it elsewhere.
    const full = new Set<string>();
    const tryOnce = (n: number): Promise<void> => {
      attempt = n + 1;
      return moveOnce(ctx, host, item, attempt, update, [...full]);
    };
    await retry(tryOnce, {
      tries: DRAIN_ATTEMPTS,
      pauseMs: (n) => (ctx.retryPauseMs ?? RETRY_PAUSE_MS) * n,
      retryIf: (err) =>
        !PERMANENT.includes(toDroverError(err).code) || refusedForRoom(err) !== null,
      onRetry: async (err, n) => {
        const refused = refusedForRoom(err);
        if (refused) full.add(refused);
        await failed(err, n, false);
        ctx.log.warn('drain: move failed; trying again', {
          opId,
          jobId,
          attempt: n,
          err: toDroverError(err),
        });
        item.destination = null; // placed afresh: the first choice may be what failed
      },
    }).catch((err: unknown) => failed(err, attempt, true));
  });
  // Reconcile before the verdict: an item whose last update did not stick (a write lost with a
  // NATS server, say) is settled by where its job is now, not by what the record says.
  const unsettled = (await ctx.ops.get(opId))!.value.items!.filter(
    (i) => i.state === 'pending' || i.state === 'moving',
  );
  for (const item of unsettled) {
    const where = await ctx.whereIs(item.jobId).catch(() => undefined);
    if (where === undefined) continue;
    await update(
      item.jobId,
      where === null
        ? { state: 'failed', reason: 'the job is no longer running anywhere' }
        : where.host !== host
          ? { state: 'done', destination: where.host }
          : { state: 'failed', reason: `still on ${host} after the drain` },
    );
  }
  const done = await ctx.ops.mutate(opId, (cur) => {
    if (!cur) return null;
    const failed = cur.items!.filter((i) => i.state !== 'done');
    return {
      ...cur,
      state: failed.length ? 'failed' : 'done',
      error: failed.length
        ? { code: 'PARTIAL', message: `${failed.length} job(s) did not move off ${host}` }
        : null,
      updatedAt: new Date().toISOString(),
    };
  });
  ctx.log.info('drain finished', { opId, host, state: done?.value.state });
  return (await ctx.ops.get(opId))!.value;
}

/** The record of job `jobId` of drain `opId` as it is now. */
async function itemOf(ctx: DrainContext, opId: string, jobId: string): Promise<DrainItem> {
  const item = (await ctx.ops.get(opId))?.value.items?.find((i) => i.jobId === jobId);
  if (!item) throw new DroverError(ErrorCode.NotFound, `drain ${opId} has no job ${jobId}`);
  return item;
}

/** One try at moving a drain's job: settled by where it is now, else migrated. */
async function moveOnce(
  ctx: DrainContext,
  host: string,
  item: DrainItem,
  attempt: number,
  update: (jobId: string, patch: Partial<DrainItem>) => Promise<unknown>,
  full: readonly string[],
): Promise<void> {
  const jobId = item.jobId;
  let where = await ctx.whereIs(jobId);
  // A migration started by a previous controller may still be running on the agent.
  for (let i = 0; i < 120 && where?.state === 'migrating'; i++) {
    await new Promise((r) => setTimeout(r, 500));
    where = await ctx.whereIs(jobId);
  }
  if (where === null) {
    await update(jobId, { state: 'failed', reason: 'the job is no longer running anywhere' });
  } else if (where.host !== host) {
    await update(jobId, { state: 'done', destination: where.host, reason: null });
  } else {
    const dest = item.destination ?? pickAgain(ctx, host, jobId, full);
    await update(jobId, { state: 'moving', destination: dest, attempts: attempt });
    const m = await ctx.migrate(host, jobId, dest);
    await update(jobId, {
      state: 'done',
      migrationId: m.migrationId,
      frozenMs: m.frozenMs,
      reason: null,
    });
  }
}

function pickAgain(
  ctx: DrainContext,
  host: string,
  jobId: string,
  full: readonly string[],
): string {
  const p = planMany(ctx.hosts(), [
    { jobId, req: { memoryBytes: 0, cpuFlags: [], exclude: [host, ...full] } },
  ]).get(jobId);
  if (p && !(p instanceof DroverError)) return p.host;
  if (full.length)
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `no other host can take job ${jobId}: ${full.join(', ')} refused it for room`,
      { details: { refusedForRoom: [...full] }, ...(p ? { cause: p } : {}) },
    );
  throw p ?? new DroverError(ErrorCode.FailedPrecondition, 'no destination');
}
