/**
 * Coordinated cluster checkpoints and their restores, as persisted state machines.
 *
 * checkpointCluster: freeze every job first (a barrier across hosts; the skew between the first and
 * the last freeze is recorded), then dump each (jobs stay frozen), then thaw them (leave running)
 * or keep them frozen until every image is stored, then store the images in the image-set object
 * store with their checksums, then stop them. Until the images are stored nothing has happened
 * that a rollback cannot undo: a failure thaws every job where it was and drops the partial set.
 *
 * restoreCluster: fetch each image onto its host (placement, optionally among `--to` hosts),
 * restore every job frozen, then thaw them all together: the workload continues from the cut.
 *
 * Each step is idempotent and the phase and per-job state are persisted in the operation record,
 * so a controller that takes over runs the same function and carries the operation on from where
 * it was (`resumeCluster`).
 */
import { randomBytes } from 'node:crypto';
import type { ObjectFiles, StateStore } from '@drover/bus';
import { DroverError, ErrorCode, newId, toDroverError, type Logger } from '@drover/common';
import type {
  JobNetwork,
  AgentOp,
  AgentReplies,
  AgentRequest,
  ClusterPhase,
  ControllerRequest,
  ImageSet,
  ImageSetJob,
  MemberItem,
  OperationRecord,
} from '@drover/protocol';
import { errorToFailure } from '@drover/protocol';
import { planMany, type HostView } from './placement.js';

/** The part of a state bucket these operations use (tests supply an in-memory one). */
export type Records<T> = Pick<
  StateStore<T>,
  'get' | 'put' | 'create' | 'mutate' | 'delete' | 'list'
>;

/** What cluster checkpoints and restores need from the controller. */
export interface ClusterContext {
  ops: Records<OperationRecord>;
  sets: Records<ImageSet>;
  /** set name → its AES-256 key (base64): only the controller reads it, agents get it per call. */
  keys: Records<{ key: string }>;
  objects: Pick<ObjectFiles, 'deletePrefix'>;
  log: Logger;
  /** Complete image sets kept; the oldest beyond this are deleted when a new one completes. */
  retention: number;
  hosts(): HostView[];
  agent<Op extends AgentOp>(
    host: string,
    op: Op,
    req: AgentRequest<Op>,
    timeoutMs?: number,
  ): Promise<AgentReplies[Op]>;
  /** Where a job's processes are now (null: nowhere). */
  whereIs(jobId: string): Promise<{ host: string; state: string } | null>;
  /** Every job on every reachable host. */
  allJobs(): Promise<{ host: string; id: string; name: string; state: string }[]>;
  /** Throws unless `host` is known, reachable and not cordoned. */
  usableHost(host: string): void;
  /**
   * A restored job takes its address (and name) back: FAILED_PRECONDITION when another job
   * holds either now (address-book.ts). A no-op for jobs on the host's network.
   */
  claimAddress(jobId: string, name: string | null, network: JobNetwork): Promise<void>;
  /** How long forward-only steps retry an unreachable agent (default 2 minutes). */
  persistMs?: number;
}

/**
 * Steps that only go forward (a rollback's thaw, a stop, a resume) are retried this long while an
 * agent is unreachable (restarting, say): a job must not stay frozen because its agent blinked.
 */
const PERSIST_MS = 120_000;

/** Pushes and fetches run this many at a time across the cluster (dumps: per host, its CPUs). */
const PARALLEL = 4;
const LONG_MS = 30 * 60_000;
const CHECKPOINTABLE = new Set(['running', 'frozen']);

// ---- checkpoint ----

/** Validate, record the operation and the image set being created, then run it. */
export async function checkpointCluster(
  ctx: ClusterContext,
  req: ControllerRequest<'checkpoint'>,
): Promise<OperationRecord> {
  if ((req.all === true) === (req.jobs !== undefined)) {
    throw new DroverError(ErrorCode.InvalidArgument, 'name the jobs to checkpoint, or --all', {
      details: { jobs: req.jobs ?? null, all: req.all ?? false },
    });
  }
  const name = req.name ?? defaultSetName();
  if (await ctx.sets.get(name)) {
    throw new DroverError(
      ErrorCode.AlreadyExists,
      `image set ${name} exists; choose another --name or delete it (drover images rm ${name})`,
      { details: { name } },
    );
  }
  const members = await chooseMembers(ctx, req);
  // A cut that leaves out a member is not a consistent cut: any job that cannot be checkpointed
  // refuses the whole checkpoint, before anything is frozen.
  const blocked: string[] = [];
  for (const m of members) {
    const r = await ctx.agent(m.host, 'preflight', { jobId: m.jobId });
    for (const x of r.reasons) blocked.push(`${m.jobId} on ${m.host}: ${x.code}: ${x.message}`);
  }
  if (blocked.length) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `cannot checkpoint: ${blocked.join('; ')}`,
      { details: { reasons: blocked } },
    );
  }
  const views = new Map(ctx.hosts().map((h) => [h.host, h]));
  const jobs: ImageSetJob[] = [];
  for (const m of members) {
    const inspected = await ctx.agent(m.host, 'inspect', { jobId: m.jobId });
    jobs.push({
      jobId: m.jobId,
      name: m.name,
      host: m.host,
      cpuFlags: views.get(m.host)?.info.cpuFlags ?? [],
      memoryBytes: inspected.memoryUsageBytes ?? 0,
      imageId: m.imageId,
      files: [],
      sizeBytes: 0,
      frozenAtMs: 0,
      dumpMs: 0,
      network: inspected.network,
    });
  }
  const now = new Date().toISOString();
  const opId = newId('op');
  const leaveRunning = req.leaveRunning === true;
  // The set's key exists before any image could be stored with it.
  await ctx.keys.put(name, { key: randomBytes(32).toString('base64') });
  try {
    await ctx.sets.create(name, {
      name,
      opId,
      state: 'creating',
      createdAt: now,
      completedAt: null,
      leaveRunning,
      freezeSkewMs: null,
      jobs,
      sizeBytes: 0,
    });
  } catch (err) {
    const e = toDroverError(err);
    if (e.code === ErrorCode.AlreadyExists) {
      throw new DroverError(ErrorCode.AlreadyExists, `image set ${name} exists`, { cause: err });
    }
    throw e;
  }
  const op: OperationRecord = {
    opId,
    kind: 'checkpoint',
    state: 'running',
    createdAt: now,
    updatedAt: now,
    request: { ...req, name },
    placement: null,
    migration: null,
    error: null,
    imageSet: name,
    phase: 'freezing',
    members,
    freezeSkewMs: null,
    frozenMs: null,
    phases: [{ phase: 'freezing', atMs: 0 }],
  };
  await ctx.ops.put(opId, op);
  return runCheckpoint(ctx, opId);
}

/** Carry a cluster checkpoint to its end from whatever phase it is in. */
export async function runCheckpoint(ctx: ClusterContext, opId: string): Promise<OperationRecord> {
  const op = new OpHandle(ctx, opId);
  let cur = await op.read();
  const name = cur.imageSet!;
  const leaveRunning = cur.request['leaveRunning'] === true;
  try {
    if (cur.phase === 'rolling-back') throw new DroverError(ErrorCode.Internal, cur.error!.message);
    if (cur.phase === 'freezing') {
      // The barrier: every job frozen before any is dumped. One request per host, all at once;
      // each agent freezes all of its jobs of the cut together.
      const hosts = await Promise.all(
        [...byHost(cur.members!)].map(([host, ms]) => freezeHost(ctx, host, ms)),
      );
      const at = new Map(hosts.flatMap((h) => h.frozenAtMs.map((t, i) => [h.jobIds[i]!, t])));
      const skew = spread([...at.values()]);
      cur = await op.update((o) => ({
        ...o,
        freezeSkewMs: skew,
        freezes: hosts.map((h) => ({
          host: h.host,
          jobIds: h.jobIds,
          requests: h.requests,
          skewMs: spread(h.frozenAtMs),
        })),
        members: o.members!.map((m) => ({ ...m, state: 'frozen', frozenAtMs: at.get(m.jobId)! })),
      }));
      cur = await op.phase('dumping');
      ctx.log.info('cluster frozen', { opId, set: name, skewMs: skew });
    }
    if (cur.phase === 'dumping') {
      // The hosts seal their local images with the set's key too: no plaintext at rest anywhere.
      const key = await setKey(ctx, name);
      // As many dumps at once on each host as it has CPUs: CRIU's dump is CPU work (reading
      // and copying pages), and the hosts are independent of each other.
      const cpus = new Map(ctx.hosts().map((h) => [h.host, h.info.cpus]));
      await forEachPerHost(
        cur.members!.filter((m) => m.state === 'frozen'),
        (host) => cpus.get(host),
        async (m) => {
          const img = await dumpMember(ctx, m, key);
          await op.member(m.jobId, {
            state: 'dumped',
            dumpMs: img.dumpMs,
            sizeBytes: img.sizeBytes,
          });
        },
      );
      cur = await op.phase(leaveRunning ? 'thawing' : 'storing');
    }
    if (cur.phase === 'thawing') {
      await Promise.all(cur.members!.map((m) => ctx.agent(m.host, 'thaw', { jobId: m.jobId })));
      cur = await op.update((o) => ({ ...o, frozenMs: frozenFor(o) }));
      cur = await op.phase('storing');
    }
    if (cur.phase === 'storing') {
      const key = await setKey(ctx, name);
      await forEachLimit(
        cur.members!.filter((m) => m.state === 'dumped'),
        PARALLEL,
        async (m) => {
          const pushed = await ctx.agent(
            m.host,
            'image-push',
            { imageId: m.imageId, prefix: `${name}/${m.jobId}`, key },
            LONG_MS,
          );
          await ctx.sets.mutate(name, (s) =>
            s
              ? {
                  ...s,
                  jobs: s.jobs.map((j) =>
                    j.jobId === m.jobId
                      ? {
                          ...j,
                          files: pushed.files,
                          sizeBytes: pushed.sizeBytes,
                          frozenAtMs: m.frozenAtMs ?? 0,
                          dumpMs: m.dumpMs ?? 0,
                        }
                      : j,
                  ),
                }
              : null,
          );
          await op.member(m.jobId, { state: 'stored', sizeBytes: pushed.sizeBytes });
        },
      );
      cur = await op.phase(leaveRunning ? 'finished' : 'stopping');
    }
  } catch (err) {
    return rollBackCheckpoint(ctx, op, toDroverError(err));
  }
  if (cur.phase === 'stopping') {
    // Every image is stored: from here the operation only goes forward. A job that cannot be
    // stopped is thawed and keeps running (reported), the set is complete either way.
    await forEachLimit(cur.members!, PARALLEL, async (m) => {
      try {
        await persist(ctx, () =>
          ctx.agent(m.host, 'discard', { jobId: m.jobId, imageId: m.imageId }),
        );
        await op.member(m.jobId, { state: 'done' });
      } catch (err) {
        await persist(ctx, () => ctx.agent(m.host, 'thaw', { jobId: m.jobId })).catch(
          () => undefined,
        );
        await op.member(m.jobId, {
          state: 'failed',
          reason: `kept running: could not stop it: ${toDroverError(err).message}`,
        });
      }
    });
    cur = await op.update((o) => ({ ...o, frozenMs: frozenFor(o) }));
    cur = await op.phase('finished');
  }
  // finished
  const set = await ctx.sets.mutate(name, (s) =>
    s
      ? {
          ...s,
          state: 'complete',
          completedAt: new Date().toISOString(),
          freezeSkewMs: cur.freezeSkewMs ?? null,
          sizeBytes: s.jobs.reduce((a, j) => a + j.sizeBytes, 0),
        }
      : null,
  );
  // The set holds the images now: the hosts' local copies go (best effort).
  await Promise.all(
    cur.members!.map((m) =>
      ctx.agent(m.host, 'images-delete', { imageId: m.imageId }).catch(() => undefined),
    ),
  );
  const failed = cur.members!.filter((m) => m.state === 'failed');
  cur = await op.update((o) => ({
    ...o,
    state: failed.length ? 'failed' : 'done',
    error: failed.length
      ? { code: 'PARTIAL', message: `${failed.length} job(s) could not be stopped; they run on` }
      : null,
    members: o.members!.map((m) => (m.state === 'failed' ? m : { ...m, state: 'done' })),
  }));
  ctx.log.info('cluster checkpoint finished', {
    opId,
    set: name,
    skewMs: cur.freezeSkewMs,
    sizeBytes: set?.value.sizeBytes,
  });
  await applyRetention(ctx).catch((err: unknown) =>
    ctx.log.warn('image-set retention failed', { err }),
  );
  return cur;
}

/** Undo a checkpoint that did not reach `stopping`: thaw every job, drop every image. */
async function rollBackCheckpoint(
  ctx: ClusterContext,
  op: OpHandle,
  cause: DroverError,
): Promise<OperationRecord> {
  ctx.log.warn('cluster checkpoint failed; rolling back', { opId: op.opId, err: cause });
  const cur = await op.rollingBack(cause);
  const name = cur.imageSet!;
  const notes: string[] = [];
  await Promise.all(
    cur.members!.map(async (m) => {
      // The job may still be in a dump the failed call gave up waiting for: thaw waits its turn.
      await persist(ctx, () => ctx.agent(m.host, 'thaw', { jobId: m.jobId }, LONG_MS)).catch(
        (err: unknown) => {
          const e = toDroverError(err);
          if (e.code !== ErrorCode.FailedPrecondition) notes.push(`${m.jobId}: ${e.message}`);
        },
      );
      await ctx.agent(m.host, 'images-delete', { imageId: m.imageId }).catch(() => undefined);
    }),
  );
  await ctx.objects.deletePrefix(`${name}/`).catch((e: unknown) => cause.suppress(e));
  await ctx.sets.delete(name).catch((e: unknown) => cause.suppress(e));
  await ctx.keys.delete(name).catch((e: unknown) => cause.suppress(e));
  return op.update((o) => ({
    ...o,
    state: 'failed',
    phase: 'finished',
    error: {
      ...errorToFailure(cause),
      message:
        `${cause.message}; every job was thawed where it was` +
        (notes.length ? ` (could not thaw: ${notes.join('; ')})` : ''),
    },
    members: o.members!.map((m) => ({ ...m, state: 'rolled-back' })),
  }));
}

/**
 * Freeze the jobs of the cut on one host with one request (`freeze-many`: all of them together, all
 * or nothing). A job frozen before (a resumed operation) keeps its first time.
 */
async function freezeHost(
  ctx: ClusterContext,
  host: string,
  members: readonly MemberItem[],
): Promise<{ host: string; jobIds: string[]; requests: number; frozenAtMs: number[] }> {
  const jobIds = members.map((m) => m.jobId);
  let times: number[];
  let requests = 1;
  try {
    const r = await ctx.agent(host, 'freeze-many', { jobIds });
    times = r.jobs.map((j) => j.frozenAtMs);
  } catch (err) {
    const e = toDroverError(err);
    if (!(e.code === ErrorCode.NotFound && /unknown operation/.test(e.message))) throw e;
    // An agent from before `freeze-many` (in a rolling upgrade): one request per job.
    requests = members.length;
    times = await Promise.all(
      members.map(async (m) => (await ctx.agent(host, 'freeze', { jobId: m.jobId })).frozenAtMs),
    );
  }
  return { host, jobIds, requests, frozenAtMs: members.map((m, i) => m.frozenAtMs ?? times[i]!) };
}

/** Dump one frozen job into its image; a dump a previous controller started counts once done. */
async function dumpMember(
  ctx: ClusterContext,
  m: MemberItem,
  key: string,
): Promise<{ dumpMs: number; sizeBytes: number }> {
  const existing = async (): Promise<{ dumpMs: number; sizeBytes: number } | null> => {
    const { images } = await ctx.agent(m.host, 'images-list', {});
    return images.find((i) => i.imageId === m.imageId) ?? null;
  };
  const had = await existing();
  if (had) return had;
  try {
    return await ctx.agent(
      m.host,
      'checkpoint',
      { jobId: m.jobId, imageId: m.imageId, leaveRunning: true, key },
      LONG_MS,
    );
  } catch (err) {
    if (toDroverError(err).code === ErrorCode.AlreadyExists) {
      const img = await existing();
      if (img) return img;
    }
    throw err;
  }
}

// ---- restore ----

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
  for (const h of to ?? []) ctx.usableHost(h);
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
    const p = plan.get(j.jobId)!;
    if (p instanceof DroverError) {
      why.push(`${j.jobId}: ${p.message}`);
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
  // Each job comes back with its own address (and name): refused here, before anything moves,
  // if another job took one meanwhile.
  for (const j of set.jobs) {
    if (j.network) await ctx.claimAddress(j.jobId, j.name !== j.jobId ? j.name : null, j.network);
  }
  const now = new Date().toISOString();
  const op: OperationRecord = {
    opId: newId('op'),
    kind: 'restore',
    state: 'running',
    createdAt: now,
    updatedAt: now,
    request: { ...req },
    placement: members.map((m) => `${m.jobId} → ${m.reason}`).join('\n'),
    migration: null,
    error: null,
    imageSet: set.name,
    phase: 'fetching',
    members: members.map((m) => ({ ...m, reason: null })),
    phases: [{ phase: 'fetching', atMs: 0 }],
  };
  await ctx.ops.put(op.opId, op);
  return runRestore(ctx, op.opId);
}

/** Carry a restore to its end from whatever phase it is in. */
export async function runRestore(ctx: ClusterContext, opId: string): Promise<OperationRecord> {
  const op = new OpHandle(ctx, opId);
  let cur = await op.read();
  const set = await readSet(ctx, cur.imageSet!);
  const byJob = new Map(set.jobs.map((j) => [j.jobId, j]));
  try {
    if (cur.phase === 'rolling-back') throw new DroverError(ErrorCode.Internal, cur.error!.message);
    if (cur.phase === 'fetching') {
      const key = await setKey(ctx, set.name);
      await forEachLimit(
        cur.members!.filter((m) => m.state === 'pending'),
        PARALLEL,
        async (m) => {
          const j = byJob.get(m.jobId)!;
          await ctx.agent(
            m.host,
            'image-fetch',
            { imageId: m.imageId, prefix: `${set.name}/${m.jobId}`, files: j.files, key },
            LONG_MS,
          );
          await op.member(m.jobId, { state: 'fetched' });
        },
      );
      cur = await op.phase('restoring');
    }
    if (cur.phase === 'restoring') {
      // Every job comes back frozen; none runs before all exist (the cut is restored whole).
      const key = await setKey(ctx, set.name);
      await forEachLimit(
        cur.members!.filter((m) => m.state === 'fetched'),
        PARALLEL,
        async (m) => {
          const there = await ctx.agent(m.host, 'inspect', { jobId: m.jobId }).catch(() => null);
          if (!(there && there.state === 'frozen' && there.restoredFrom === m.imageId)) {
            await ctx.agent(
              m.host,
              'restore',
              { imageId: m.imageId, leaveFrozen: true, key },
              LONG_MS,
            );
          }
          await op.member(m.jobId, { state: 'restored' });
        },
      );
      cur = await op.phase('resuming');
    }
  } catch (err) {
    return rollBackRestore(ctx, op, toDroverError(err));
  }
  // resuming: every job exists, frozen; thawing only goes forward.
  const notes: string[] = [];
  await Promise.all(
    cur.members!.map(async (m) => {
      try {
        await persist(ctx, () => ctx.agent(m.host, 'thaw', { jobId: m.jobId }));
        await op.member(m.jobId, { state: 'done' });
      } catch (err) {
        notes.push(`${m.jobId}: ${toDroverError(err).message}`);
        await op.member(m.jobId, { state: 'failed', reason: toDroverError(err).message });
      }
      await ctx.agent(m.host, 'images-delete', { imageId: m.imageId }).catch(() => undefined);
    }),
  );
  cur = await op.phase('finished');
  cur = await op.update((o) => ({
    ...o,
    state: notes.length ? 'failed' : 'done',
    error: notes.length ? { code: 'PARTIAL', message: `could not thaw ${notes.join('; ')}` } : null,
  }));
  ctx.log.info('image set restored', { opId, set: set.name });
  return cur;
}

/** Undo a restore that did not reach `resuming`: end every restored (frozen) job, drop copies. */
async function rollBackRestore(
  ctx: ClusterContext,
  op: OpHandle,
  cause: DroverError,
): Promise<OperationRecord> {
  ctx.log.warn('restore failed; rolling back', { opId: op.opId, err: cause });
  const cur = await op.rollingBack(cause);
  await Promise.all(
    cur.members!.map(async (m) => {
      const there = await persist(ctx, () =>
        ctx.agent(m.host, 'inspect', { jobId: m.jobId }),
      ).catch(() => null);
      if (there && there.restoredFrom === m.imageId && there.state === 'frozen') {
        await ctx
          .agent(m.host, 'discard', { jobId: m.jobId, note: `restore ${cur.opId} rolled back` })
          .catch((e: unknown) => cause.suppress(e));
      }
      await ctx.agent(m.host, 'images-delete', { imageId: m.imageId }).catch(() => undefined);
    }),
  );
  return op.update((o) => ({
    ...o,
    state: 'failed',
    phase: 'finished',
    error: {
      ...errorToFailure(cause),
      message: `${cause.message}; nothing was restored (the image set is unchanged)`,
    },
    members: o.members!.map((m) => ({ ...m, state: 'rolled-back' })),
  }));
}

// ---- image sets ----

/** Image sets, newest first. */
export async function listSets(ctx: ClusterContext): Promise<ImageSet[]> {
  const all = [...(await ctx.sets.list()).values()].map((v) => v.value);
  return all.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
}

export async function readSet(ctx: ClusterContext, name: string): Promise<ImageSet> {
  const s = await ctx.sets.get(name);
  if (!s) {
    throw new DroverError(ErrorCode.NotFound, `no image set ${name} (see drover images ls)`, {
      details: { name },
    });
  }
  return s.value;
}

/** Delete a set's objects and its record; refused while an operation uses it. */
export async function deleteSet(
  ctx: ClusterContext,
  name: string,
): Promise<{ deleted: boolean; objects: number }> {
  await readSet(ctx, name);
  await refuseIfBusy(ctx, name);
  const objects = await ctx.objects.deletePrefix(`${name}/`);
  await ctx.sets.delete(name);
  await ctx.keys.delete(name);
  ctx.log.info('image set deleted', { set: name, objects });
  return { deleted: true, objects };
}

/** Keep the newest `retention` complete sets. */
async function applyRetention(ctx: ClusterContext): Promise<void> {
  const complete = (await listSets(ctx)).filter((s) => s.state === 'complete');
  for (const s of complete.slice(ctx.retention)) {
    ctx.log.info('image set past retention', { set: s.name, retention: ctx.retention });
    await deleteSet(ctx, s.name);
  }
}

/** The key image set `name` is sealed with. */
export async function setKey(ctx: ClusterContext, name: string): Promise<string> {
  const k = await ctx.keys.get(name);
  if (!k) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `the key of image set ${name} is missing; its images cannot be stored or read`,
      { details: { name } },
    );
  }
  return k.value.key;
}

/** Operations to resume after a takeover. */
export function resumable(op: OperationRecord): boolean {
  return (op.kind === 'checkpoint' || op.kind === 'restore') && op.state === 'running';
}

/** Resume a checkpoint or restore a previous controller left running. */
export function resumeCluster(ctx: ClusterContext, op: OperationRecord): Promise<OperationRecord> {
  return op.kind === 'checkpoint' ? runCheckpoint(ctx, op.opId) : runRestore(ctx, op.opId);
}

// ---- helpers ----

/** Retry `fn` while it fails with a retryable error (an agent restarting), up to PERSIST_MS. */
async function persist<T>(ctx: ClusterContext, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + (ctx.persistMs ?? PERSIST_MS);
  for (let delay = 250; ; delay = Math.min(delay * 2, 5000)) {
    try {
      return await fn();
    } catch (err) {
      const e = toDroverError(err);
      if (!e.retryable || Date.now() + delay > deadline) throw e;
      ctx.log.warn('retrying', { err: e.message, inMs: delay });
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

async function chooseMembers(
  ctx: ClusterContext,
  req: ControllerRequest<'checkpoint'>,
): Promise<MemberItem[]> {
  const member = (host: string, id: string, name: string): MemberItem => ({
    jobId: id,
    name,
    host,
    state: 'pending',
    imageId: newId('img'),
    frozenAtMs: null,
    dumpMs: null,
    sizeBytes: null,
    reason: null,
  });
  if (req.all === true) {
    const jobs = (await ctx.allJobs()).filter((j) => CHECKPOINTABLE.has(j.state));
    if (jobs.length === 0) {
      throw new DroverError(ErrorCode.FailedPrecondition, 'no running jobs to checkpoint');
    }
    return jobs.map((j) => member(j.host, j.id, j.name));
  }
  const out: MemberItem[] = [];
  const all = await ctx.allJobs();
  for (const id of [...new Set(req.jobs!)]) {
    const live = all.find((j) => j.id === id && CHECKPOINTABLE.has(j.state));
    if (!live) {
      const other = all.find((j) => j.id === id && j.state !== 'exited');
      if (other) {
        throw new DroverError(
          ErrorCode.FailedPrecondition,
          `job ${id} is ${other.state} on ${other.host}; only running jobs are checkpointed`,
          { details: { jobId: id, state: other.state } },
        );
      }
      throw new DroverError(ErrorCode.NotFound, `no running job ${id} on any reachable host`, {
        details: { jobId: id },
      });
    }
    out.push(member(live.host, live.id, live.name));
  }
  return out;
}

async function refuseIfBusy(ctx: ClusterContext, name: string): Promise<void> {
  const busy = [...(await ctx.ops.list()).values()]
    .map((v) => v.value)
    .find((o) => o.imageSet === name && o.state === 'running');
  if (busy) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `image set ${name} is in use by ${busy.kind} ${busy.opId}; wait for it (drover status ${busy.opId})`,
      { details: { name, opId: busy.opId } },
    );
  }
}

/** From the first freeze to now (the thaw or the stop). */
function frozenFor(o: OperationRecord): number | null {
  const times = o.members!.map((m) => m.frozenAtMs).filter((t): t is number => t !== null);
  return times.length ? Math.round(Date.now() - Math.min(...times)) : null;
}

function defaultSetName(): string {
  return `set-${new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)}`;
}

/** Run `fn` over `items`, `limit` at a time; after a failure nothing new starts; throws the first. */
function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  return forEachGrouped([items], () => limit, fn);
}

/**
 * Run `fn` over members, on each host as many at a time as `limitOf(host)` (at least 1; a
 * host that does not say: 1), every host at once; after a failure nothing new starts on any host;
 * throws the first.
 */
export function forEachPerHost<T extends { host: string }>(
  items: readonly T[],
  limitOf: (host: string) => number | undefined,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  return forEachGrouped(
    [...byHost(items).values()],
    (group) => {
      const n = limitOf(group[0]!.host);
      return n !== undefined && Number.isInteger(n) && n > 0 ? n : 1;
    },
    fn,
  );
}

async function forEachGrouped<T>(
  groups: readonly (readonly T[])[],
  limitOf: (group: readonly T[]) => number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let failed: { err: unknown } | null = null;
  const worker = async (queue: T[]): Promise<void> => {
    for (let it = queue.shift(); it !== undefined && failed === null; it = queue.shift()) {
      try {
        await fn(it);
      } catch (err) {
        failed ??= { err };
      }
    }
  };
  await Promise.all(
    groups.flatMap((group) => {
      const queue = [...group];
      return Array.from({ length: Math.min(limitOf(group), group.length) }, () => worker(queue));
    }),
  );
  if (failed !== null) throw (failed as { err: unknown }).err;
}

/** Items by their host, hosts in order of first appearance. */
function byHost<T extends { host: string }>(items: readonly T[]): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const it of items) {
    const list = out.get(it.host);
    if (list) list.push(it);
    else out.set(it.host, [it]);
  }
  return out;
}

/** Last minus first of some hosts' times, to 0.1 ms. */
function spread(times: readonly number[]): number {
  return Math.round((Math.max(...times) - Math.min(...times)) * 10) / 10;
}

/** Persisted updates of one operation record (compare-and-set, like the drain's). */
class OpHandle {
  constructor(
    private readonly ctx: ClusterContext,
    readonly opId: string,
  ) {}

  async read(): Promise<OperationRecord> {
    const r = await this.ctx.ops.get(this.opId);
    if (!r) throw new DroverError(ErrorCode.NotFound, `no operation ${this.opId}`);
    return r.value;
  }

  async update(fn: (o: OperationRecord) => OperationRecord): Promise<OperationRecord> {
    const r = await this.ctx.ops.mutate(this.opId, (cur) =>
      cur ? { ...fn(cur), updatedAt: new Date().toISOString() } : null,
    );
    if (!r) throw new DroverError(ErrorCode.NotFound, `no operation ${this.opId}`);
    return r.value;
  }

  member(jobId: string, patch: Partial<MemberItem>): Promise<OperationRecord> {
    return this.update((o) => ({
      ...o,
      members: o.members!.map((m) => (m.jobId === jobId ? { ...m, ...patch } : m)),
    }));
  }

  /** Record the first error and enter `rolling-back` (once: a resumed rollback keeps both). */
  async rollingBack(cause: DroverError): Promise<OperationRecord> {
    const cur = await this.read();
    if (cur.phase === 'rolling-back') return cur;
    // In full (causes, rollback errors): `drover status OP` shows why.
    await this.update((o) => ({ ...o, error: errorToFailure(cause) }));
    return this.phase('rolling-back');
  }

  phase(phase: ClusterPhase): Promise<OperationRecord> {
    return this.update((o) => ({
      ...o,
      phase,
      phases: [...(o.phases ?? []), { phase, atMs: Date.now() - Date.parse(o.createdAt) }],
    }));
  }
}
