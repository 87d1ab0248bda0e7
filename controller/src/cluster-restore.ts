/**
 * Restores of image sets, as a persisted state machine.
 *
 * restoreCluster validates and places (optionally among `--to` hosts) and records the operation;
 * bad input changes nothing. `runRestore` then carries it through named phases: fetch each image
 * onto its host, restore every job frozen, then thaw them all together (the workload continues
 * from the cut). A failure while fetching or restoring leaves through the one rollback exit,
 * which ends every job it restored; resuming only goes forward.
 *
 * Each phase is idempotent and persisted in the operation record: a controller that takes over
 * calls `runRestore` again and it carries the operation on from where it was.
 */
import { DroverError, ErrorCode, newId, toDroverError } from '@drover/common';
import type {
  ControllerRequest,
  ImageSet,
  ImageSetJob,
  MemberItem,
  OperationRecord,
} from '@drover/protocol';
import {
  dropLocalImage,
  forEachIn,
  LONG_MS,
  persist,
  type ClusterContext,
} from './cluster-context.js';
import { readSet, refuseIfBusy, setKey } from './image-sets.js';
import { ClusterOpHandle, newOperation, type RestoreRecord } from './op-record.js';
import { planMany } from './placement.js';

type Handle = ClusterOpHandle<RestoreRecord>;

/** One run of a restore: what its phases work with. */
interface RestoreRun {
  ctx: ClusterContext;
  op: Handle;
  set: ImageSet;
}

/** Validate and place, record the operation, then run it. Bad input changes nothing. */
export async function restoreCluster(
  ctx: ClusterContext,
  req: ControllerRequest<'restore'>,
): Promise<OperationRecord> {
  const set = await readSet(ctx, req.name);
  if (set.state !== 'complete') {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `image set ${set.name} is still being created (operation ${set.opId})`,
      { details: { name: set.name, opId: set.opId } },
    );
  }
  const to = req.to ? [...new Set(req.to)] : undefined;
  for (const h of to ?? []) await ctx.usableHost(h);
  await refuseIfBusy(ctx, set.name);
  const running: string[] = [];
  for (const j of set.jobs) {
    const where = await ctx.whereIs(j.jobId);
    if (where) running.push(`${j.jobId} is ${where.state} on ${where.host}`);
  }
  if (running.length) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `cannot restore ${set.name}: ${running.join('; ')}; stop those jobs first (drover stop JOB)`,
      { details: { running } },
    );
  }
  const members = placeMembers(ctx, set, to);
  // Each job comes back with its own address (and name): refused here, before anything moves,
  // if another job took one meanwhile.
  for (const j of set.jobs) {
    if (j.network) await ctx.claimAddress(j.jobId, j.name !== j.jobId ? j.name : null, j.network);
  }
  const op = newOperation('restore', newId('op'), {
    request: { ...req },
    placement: members.map((m) => `${m.jobId} → ${m.reason}`).join('\n'),
    imageSet: set.name,
    phase: 'fetching',
    members: members.map((m) => ({ ...m, reason: null })),
    phases: [{ phase: 'fetching', atMs: 0 }],
  });
  await ctx.ops.put(op.opId, op);
  return runRestore(ctx, op.opId);
}

/** Where each job of `set` goes (placement's explanation in `reason`); refused if one fits nowhere. */
function placeMembers(ctx: ClusterContext, set: ImageSet, to?: string[]): MemberItem[] {
  const plan = planMany(
    ctx.hosts(),
    set.jobs.map((j) => ({
      jobId: j.jobId,
      req: {
        memoryBytes: j.memoryBytes,
        cpuFlags: j.cpuFlags,
        ...(to ? { candidates: to } : {}),
      },
    })),
  );
  const members: MemberItem[] = [];
  const why: string[] = [];
  for (const j of set.jobs) {
    const p = plan.get(j.jobId);
    if (p === undefined || p instanceof DroverError) {
      why.push(`${j.jobId}: ${p?.message ?? 'not placed'}`);
      continue;
    }
    members.push({
      jobId: j.jobId,
      name: j.name,
      host: p.host,
      state: 'pending',
      imageId: j.imageId,
      frozenAtMs: null,
      dumpMs: null,
      sizeBytes: j.sizeBytes,
      reason: p.explanation,
    });
  }
  if (why.length) {
    throw new DroverError(ErrorCode.FailedPrecondition, `no host fits: ${why.join('; ')}`, {
      details: { reasons: why },
    });
  }
  return members;
}

/**
 * Carry a restore to its end from whatever phase it is in: a new one, or one a previous
 * controller left running (resumed after a takeover).
 */
export async function runRestore(ctx: ClusterContext, opId: string): Promise<OperationRecord> {
  const op: Handle = new ClusterOpHandle(ctx.ops, opId, 'restore');
  let cur = await op.read();
  const set = await readSet(ctx, cur.imageSet);
  try {
    if (cur.phase === 'rolling-back') {
      throw new DroverError(ErrorCode.Internal, cur.error?.message ?? 'rolling back');
    }
    const run: RestoreRun = { ctx, op, set };
    if (cur.phase === 'fetching') cur = await fetchAll(run, cur);
    if (cur.phase === 'restoring') cur = await restoreAll(run, cur);
  } catch (err) {
    return rollBackRestore(ctx, op, toDroverError(err));
  }
  return resumeAll(ctx, op, cur);
}

/** fetching: each job's image from the set's object store onto the host it goes to. */
async function fetchAll({ ctx, op, set }: RestoreRun, cur: RestoreRecord): Promise<RestoreRecord> {
  const key = await setKey(ctx, set.name);
  await forEachIn(cur.members, 'pending', async (m) => {
    await ctx.agent(
      m.host,
      'image-fetch',
      { imageId: m.imageId, prefix: `${set.name}/${m.jobId}`, files: jobOf(set, m).files, key },
      LONG_MS,
    );
    await op.member(m.jobId, { state: 'fetched' });
  });
  return op.phase('restoring');
}

/** restoring: every job comes back frozen; none runs before all exist (the cut is restored whole). */
async function restoreAll(
  { ctx, op, set }: RestoreRun,
  cur: RestoreRecord,
): Promise<RestoreRecord> {
  const key = await setKey(ctx, set.name);
  await forEachIn(cur.members, 'fetched', async (m) => {
    const there = await ctx.agent(m.host, 'inspect', { jobId: m.jobId }).catch(() => null);
    if (!(there && there.state === 'frozen' && there.restoredFrom === m.imageId)) {
      await ctx.agent(m.host, 'restore', { imageId: m.imageId, leaveFrozen: true, key }, LONG_MS);
    }
    await op.member(m.jobId, { state: 'restored' });
  });
  return op.phase('resuming');
}

/** resuming: every job exists, frozen; thawing them all only goes forward. */
async function resumeAll(
  ctx: ClusterContext,
  op: Handle,
  cur: RestoreRecord,
): Promise<OperationRecord> {
  const notes: string[] = [];
  await Promise.all(
    cur.members.map(async (m) => {
      try {
        await persist(ctx, () => ctx.agent(m.host, 'thaw', { jobId: m.jobId }));
        await op.member(m.jobId, { state: 'done' });
      } catch (err) {
        notes.push(`${m.jobId}: ${toDroverError(err).message}`);
        await op.member(m.jobId, { state: 'failed', reason: toDroverError(err).message });
      }
      await dropLocalImage(ctx, m);
    }),
  );
  await op.phase('finished');
  const done = await op.update((o) => ({
    ...o,
    state: notes.length ? 'failed' : 'done',
    error: notes.length ? { code: 'PARTIAL', message: `could not thaw ${notes.join('; ')}` } : null,
  }));
  ctx.log.info('image set restored', { opId: op.opId, set: cur.imageSet });
  return done;
}

/** The one rollback exit, before `resuming`: end every restored (frozen) job, drop copies. */
async function rollBackRestore(
  ctx: ClusterContext,
  op: Handle,
  cause: DroverError,
): Promise<OperationRecord> {
  ctx.log.warn('restore failed; rolling back', { opId: op.opId, err: cause });
  const cur = await op.rollingBack(cause);
  await Promise.all(
    cur.members.map(async (m) => {
      const there = await persist(ctx, () =>
        ctx.agent(m.host, 'inspect', { jobId: m.jobId }),
      ).catch(() => null);
      if (there && there.restoredFrom === m.imageId && there.state === 'frozen') {
        await ctx
          .agent(m.host, 'discard', { jobId: m.jobId, note: `restore ${cur.opId} rolled back` })
          .catch((e: unknown) => cause.suppress(e));
      }
      await dropLocalImage(ctx, m);
    }),
  );
  return op.rolledBack(
    cause,
    `${cause.message}; nothing was restored (the image set is unchanged)`,
  );
}

/** The set's record of member `m`'s job. */
function jobOf(set: ImageSet, m: MemberItem): ImageSetJob {
  const j = set.jobs.find((x) => x.jobId === m.jobId);
  if (!j) {
    throw new DroverError(ErrorCode.Internal, `image set ${set.name} has no job ${m.jobId}`, {
      details: { set: set.name, jobId: m.jobId },
    });
  }
  return j;
}
