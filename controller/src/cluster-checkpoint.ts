/**
 * Coordinated cluster checkpoints, as a persisted state machine.
 *
 * checkpointCluster validates and records the operation and the image set being created, then
 * `runCheckpoint` carries it through named phases, in order: freeze every job first (a barrier
 * across hosts, at one instant scheduled ahead: cluster-cut.ts; the skew between the first and
 * the last freeze is recorded), dump each (jobs stay
 * frozen), thaw them (leave running) or keep them frozen until every image is stored, store the
 * images in the image-set object store with their checksums, then stop them. Until the images
 * are stored nothing has happened that a rollback cannot undo: a failure in any of those phases
 * leaves through the one rollback exit, which thaws every job where it was and drops the partial
 * set. After that the operation only goes forward.
 *
 * Each phase is idempotent and the phase and per-job state are persisted in the operation record,
 * so a controller that takes over calls `runCheckpoint` again and it carries the operation on
 * from where it was. Restores are in cluster-restore.ts, the catalogue in image-sets.ts.
 */
import { randomBytes } from 'node:crypto';
import {
  DroverError,
  ErrorCode,
  forEachLimit,
  newId,
  runGroups,
  settleAll,
  toDroverError,
} from '@drover/common';
import type {
  AgentReplies,
  ControllerRequest,
  ImageSetJob,
  MemberItem,
  OperationRecord,
} from '@drover/protocol';
import {
  dropLocalImage,
  DUMPS_PER_HOST,
  LONG_MS,
  PARALLEL,
  persist,
  type ClusterContext,
} from './cluster-context.js';
import { freezeCut, isUnknownOp, type FrozenHost } from './cluster-cut.js';
import { applyRetention, setKey } from './image-sets.js';
import {
  BatchedWrites,
  ClusterOpHandle,
  memberWrites,
  newOperation,
  type CheckpointRecord,
} from './op-record.js';

const CHECKPOINTABLE = new Set(['running', 'frozen']);

type Handle = ClusterOpHandle<CheckpointRecord>;

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
  const op = newOperation('checkpoint', newId('op'), {
    request: { ...req, name },
    imageSet: name,
    phase: 'freezing',
    members,
    freezeSkewMs: null,
    frozenMs: null,
    phases: [{ phase: 'freezing', atMs: 0 }],
  });
  const leaveRunning = req.leaveRunning === true;
  // The set's key exists before any image could be stored with it.
  await ctx.keys.put(name, { key: randomBytes(32).toString('base64') });
  try {
    await ctx.sets.create(name, {
      name,
      opId: op.opId,
      state: 'creating',
      createdAt: op.createdAt,
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
  await ctx.ops.put(op.opId, op);
  return runCheckpoint(ctx, op.opId);
}

/**
 * Carry a cluster checkpoint to its end from whatever phase it is in: a new one, or one a
 * previous controller left running (resumed after a takeover).
 */
export async function runCheckpoint(ctx: ClusterContext, opId: string): Promise<OperationRecord> {
  const op: Handle = new ClusterOpHandle(ctx.ops, opId, 'checkpoint');
  let cur = await op.read();
  try {
    if (cur.phase === 'rolling-back') {
      throw new DroverError(ErrorCode.Internal, cur.error?.message ?? 'rolling back');
    }
    // Dumps a previous controller may have made are looked for only when this call did not
    // make the cut itself: image ids are new for each checkpoint, so after our own freeze
    // there is none.
    const fresh = cur.phase === 'freezing';
    // Read before the cut: nothing that can wait is done while the jobs are frozen.
    const key = fresh || cur.phase === 'dumping' ? await setKey(ctx, cur.imageSet) : '';
    if (cur.phase === 'freezing') {
      await readyDumps(ctx, cur);
      cur = await freezeAll(ctx, op, cur);
    }
    if (cur.phase === 'dumping') cur = await dumpAll(ctx, op, cur, key, fresh);
    if (cur.phase === 'thawing') cur = await thawAll(ctx, op, cur);
    if (cur.phase === 'storing') cur = await storeAll(ctx, op, cur);
  } catch (err) {
    return rollBackCheckpoint(ctx, op, toDroverError(err));
  }
  if (cur.phase === 'stopping') cur = await stopAll(ctx, op, cur);
  return finishCheckpoint(ctx, op, cur);
}

/** Whether the jobs keep running after the cut (`--leave-running`). */
function leavesRunning(o: CheckpointRecord): boolean {
  return o.request['leaveRunning'] === true;
}

/**
 * Before the cut: each host starts the CRIU processes of its dumps (`criu-warm`) and readies the
 * dumps themselves (`dumps-prepare`: records, image directories, dump plans), all hosts at once,
 * so that no dump in the cut waits for either. Only a help: a host that cannot (an agent from
 * before it, in a rolling upgrade) does it in each dump, as before.
 */
async function readyDumps(ctx: ClusterContext, cur: CheckpointRecord): Promise<void> {
  const help = (host: string, op: string) => (err: unknown) =>
    ctx.log.debug('a host cannot ready its dumps', { host, op, err });
  await Promise.all(
    [...byHost(cur.members)].flatMap(([host, members]) => [
      ctx.agent(host, 'criu-warm', { count: members.length }).catch(help(host, 'criu-warm')),
      ctx
        .agent(host, 'dumps-prepare', {
          dumps: members.map((m) => ({ jobId: m.jobId, imageId: m.imageId })),
        })
        .catch(help(host, 'dumps-prepare')),
    ]),
  );
}

/**
 * freezing: the barrier, every job frozen before any is dumped. One request per host, each
 * naming the instant of a scheduled cut (cluster-cut.ts); each agent freezes all of its jobs of
 * the cut together at that instant of its clock.
 */
async function freezeAll(
  ctx: ClusterContext,
  op: Handle,
  cur: CheckpointRecord,
): Promise<CheckpointRecord> {
  const { hosts, plan, attempts } = await freezeCut(ctx, [...byHost(cur.members)]);
  const at = new Map(hosts.flatMap((h) => h.frozen.map((f) => [f.jobId, f.frozenAtMs] as const)));
  const skew = spread([...at.values()]);
  // When each job's freeze was requested: the cut itself (docs/CHECKPOINT.md, "What the skew
  // measures"); known when every job of the cut was requested by a cut timer in this plan.
  const requested = (h: FrozenHost): number[] | null =>
    h.frozen.every((f) => f.requestedAtMs !== undefined)
      ? h.frozen.map((f) => f.requestedAtMs!)
      : null;
  const all = hosts.map(requested);
  const known = all.every((r) => r !== null && r.length > 0);
  const requestSkew = known ? spread(all.flatMap((r) => r!)) : null;
  // The cut is made: one write records it and enters `dumping` (every write here is frozen time).
  const next = await op.phase('dumping', (o) => ({
    ...o,
    freezeSkewMs: skew,
    requestSkewMs: requestSkew,
    freezes: hosts.map((h, i) => ({
      host: h.host,
      jobIds: h.frozen.map((f) => f.jobId),
      requests: h.requests,
      skewMs: spread(h.frozen.map((f) => f.frozenAtMs)),
      ...(all[i]?.length ? { requestSkewMs: spread(all[i]) } : {}),
      ...(h.cut
        ? {
            cutAtMs: h.cut.atMs,
            offsetMs: hundredths(h.cut.offsetMs),
            rttMs: hundredths(h.cut.rttMs),
            ...(h.issuedAtMs === null
              ? {}
              : { issuedLateMs: hundredths(h.issuedAtMs - h.cut.atMs) }),
            lateMs: hundredths(Math.max(...h.frozen.map((f) => f.frozenAtMs)) - h.cut.atMs),
          }
        : {}),
    })),
    cut: plan && {
      atMs: plan.atMs,
      marginMs: hundredths(plan.marginMs),
      attempts,
      // On the controller's clock: each host's times less its estimated offset.
      skewMs: spread(
        hosts.flatMap((h) => h.frozen.map((f) => f.frozenAtMs - (h.cut?.offsetMs ?? 0))),
      ),
      ...(known
        ? {
            requestSkewMs: spread(
              hosts.flatMap((h, i) => all[i]!.map((t) => t - (h.cut?.offsetMs ?? 0))),
            ),
          }
        : {}),
    },
    members: o.members.map((m) => ({
      ...m,
      state: 'frozen',
      frozenAtMs: at.get(m.jobId) ?? m.frozenAtMs,
    })),
  }));
  ctx.log.info('cluster frozen', {
    opId: op.opId,
    set: cur.imageSet,
    skewMs: skew,
    requestSkewMs: requestSkew,
    scheduled: plan !== null,
    attempts,
  });
  return next;
}

/**
 * dumping: each frozen job into its image, on each host as many at once as it has CPUs
 * (`--dumps-per-host` sets another number), every host at once, one request per host
 * (`checkpoint-many`: no dump waits for the next call). More at once is slower on a busy host:
 * the agent's own work for each dump (answering CRIU's notifications, archiving the job's
 * directory, its records) queues on its one event loop (docs/CHECKPOINT.md, "Where the cut's time
 * goes"); each dump's CRIU was started, and the dump readied, before the cut (`readyDumps`). The hosts seal their local
 * images with the set's key too: no plaintext at rest anywhere.
 */
async function dumpAll(
  ctx: ClusterContext,
  op: Handle,
  cur: CheckpointRecord,
  key: string,
  fresh: boolean,
): Promise<CheckpointRecord> {
  const hosts = byHost(cur.members.filter((m) => m.state === 'frozen'));
  const cpus = new Map(ctx.hosts().map((h) => [h.host, h.info.cpus]));
  const perHost = ctx.dumpsPerHost ?? DUMPS_PER_HOST;
  // A previous controller's dumps: one list per host, all hosts at once (none after our own cut).
  const made = fresh ? null : await imagesOn(ctx, [...hosts.keys()]);
  // Each job's `dumped` is written behind the dumps, as few writes as they come in: a dump does
  // not wait for the record (every write here is frozen time).
  const writes = memberWrites(op);
  const t0 = performance.now();
  // Per host, per job: [started at, the dump call, CRIU's time] in ms from the first dump.
  const timings: Record<string, number[][]> = {};
  const dumped = (m: MemberItem, img: Dumped, startedMs: number, tookMs: number): void => {
    writes.add(m.jobId, { state: 'dumped', dumpMs: img.dumpMs, sizeBytes: img.sizeBytes });
    (timings[m.host] ??= []).push([startedMs, tookMs, img.dumpMs].map(Math.round));
  };
  // After a host's failure no dump starts anywhere: the others are told, and their running
  // dumps end before the rollback thaws anything.
  let stopping = false;
  const stop = (host: string): Promise<void> =>
    ctx
      .agent(host, 'checkpoint-stop', { runId: op.opId })
      .then(() => undefined)
      .catch((err: unknown) => ctx.log.debug('cannot stop dumps', { host, err }));
  let thaws: Thaws | null = null;
  try {
    await settleAll(
      [...hosts].map(async ([host, members]) => {
        const todo: MemberItem[] = [];
        for (const m of members) {
          const had = made?.get(host)?.get(m.imageId);
          if (had) dumped(m, had, 0, 0);
          else todo.push(m);
        }
        const n = perHost > 0 ? perHost : cpus.get(host);
        const parallel = n !== undefined && Number.isInteger(n) && n > 0 ? Math.min(n, 64) : 1;
        const since = performance.now() - t0;
        const run = { runId: op.opId, stopped: () => stopping };
        await dumpHost(ctx, run, todo, key, parallel, since, dumped).catch(async (err) => {
          if (!stopping) {
            stopping = true;
            await Promise.all([...hosts.keys()].filter((h) => h !== host).map(stop));
          }
          throw err;
        });
      }),
    );
    // --leave-running: the jobs run again before the dumps and the phase are recorded (every
    // write before the thaw is frozen time). A controller that takes over before the phase is
    // written finds every image made and thaws again, which changes nothing.
    if (leavesRunning(cur)) thaws = await thawHosts(ctx, cur);
  } finally {
    // Whatever was dumped is recorded, also on the way to a rollback.
    await writes.flush().catch((e: unknown) => ctx.log.warn('cannot record dumps', { err: e }));
  }
  ctx.log.info('cluster dumped', {
    opId: op.opId,
    ms: Math.round(performance.now() - t0),
    timings,
  });
  const next = await op.phase(leavesRunning(cur) ? 'thawing' : 'storing', writes.apply);
  return thaws ? thawAll(ctx, op, next, thaws) : next;
}

/**
 * One host's dumps (`members`, all on it), `parallel` at once, in one `checkpoint-many` of
 * `run`; one `checkpoint` each on an agent from before it (a rolling upgrade), none started once
 * `run` is stopped. `dumped` hears of each image made, with when its call started and how long it
 * took (ms, from `sinceMs` on).
 */
async function dumpHost(
  ctx: ClusterContext,
  run: { runId: string; stopped: () => boolean },
  members: readonly MemberItem[],
  key: string,
  parallel: number,
  sinceMs: number,
  dumped: (m: MemberItem, img: Dumped, startedMs: number, tookMs: number) => void,
): Promise<void> {
  const host = members[0]?.host;
  if (host === undefined) return;
  try {
    const r = await ctx.agent(
      host,
      'checkpoint-many',
      {
        runId: run.runId,
        dumps: members.map((m) => ({ jobId: m.jobId, imageId: m.imageId })),
        leaveRunning: true,
        key,
        parallel,
      },
      LONG_MS,
    );
    r.dumps.forEach((d, i) => dumped(members[i]!, d.image, sinceMs + d.startedMs, d.tookMs));
    return;
  } catch (err) {
    if (!isUnknownOp(err)) throw toDroverError(err);
  }
  const t0 = performance.now();
  await runGroups(
    [members],
    () => parallel,
    async (m) => {
      if (run.stopped()) throw new DroverError(ErrorCode.FailedPrecondition, 'dumps stopped');
      const tStart = performance.now();
      const img = await dumpMember(ctx, m, key);
      dumped(m, img, sinceMs + tStart - t0, performance.now() - tStart);
    },
  );
}

/** The images each of `hosts` has, by image id. */
async function imagesOn(
  ctx: ClusterContext,
  hosts: readonly string[],
): Promise<Map<string, Map<string, Dumped>>> {
  const lists = await Promise.all(hosts.map((h) => ctx.agent(h, 'images-list', {})));
  return new Map(hosts.map((h, i) => [h, new Map(lists[i]!.images.map((x) => [x.imageId, x]))]));
}

type Dumped = { dumpMs: number; sizeBytes: number };

/** Dump one frozen job into its image; one a previous controller's call made counts as made. */
async function dumpMember(ctx: ClusterContext, m: MemberItem, key: string): Promise<Dumped> {
  try {
    return await ctx.agent(
      m.host,
      'checkpoint',
      { jobId: m.jobId, imageId: m.imageId, leaveRunning: true, key },
      LONG_MS,
    );
  } catch (err) {
    // A dump of this image made meanwhile (a previous controller's call ended on the agent).
    if (toDroverError(err).code === ErrorCode.AlreadyExists) {
      const img = (await imagesOn(ctx, [m.host])).get(m.host)?.get(m.imageId);
      if (img) return img;
    }
    throw err;
  }
}

/** The hosts' thaws: when each answered (ms from the first request), each host's thaw time. */
interface Thaws {
  took: Record<string, number>;
  thawedAt: Map<string, number>;
  /** The cut as the controller heard it: its first freeze to the last answer. */
  heard: number | null;
}

/** Every job of the cut thawed, one request per host (`thaw-many`), every host at once. */
async function thawHosts(ctx: ClusterContext, cur: CheckpointRecord): Promise<Thaws> {
  const t0 = performance.now();
  const took: Record<string, number> = {};
  const thawedAt = new Map<string, number>();
  await Promise.all(
    [...byHost(cur.members)].map(async ([host, members]) => {
      const at = await thawHost(ctx, host, members);
      took[host] = Math.round(performance.now() - t0);
      if (at !== undefined) thawedAt.set(host, at);
    }),
  );
  return { took, thawedAt, heard: frozenFor(cur) };
}

/**
 * thawing (`--leave-running`): the jobs run on right after their dumps, before the upload; one
 * request per host (`thaw-many`: its jobs thawed together), every host at once — done already by
 * `dumpAll` (`thaws`), or here for a checkpoint taken over in this phase. Then the cut's frozen
 * time is recorded.
 */
async function thawAll(
  ctx: ClusterContext,
  op: Handle,
  cur: CheckpointRecord,
  thaws?: Thaws,
): Promise<CheckpointRecord> {
  const { took, thawedAt, heard } = thaws ?? (await thawHosts(ctx, cur));
  // Each host's thaw time into its part of the record.
  const withThaws = (o: CheckpointRecord): CheckpointRecord => {
    if (!o.freezes) return o;
    const freezes = o.freezes.map((f) => {
      const at = thawedAt.get(f.host);
      return at === undefined ? f : { ...f, thawedAtMs: at };
    });
    return { ...o, freezes };
  };
  const next = await op.update((o) => {
    const out = withThaws(o);
    return { ...out, frozenMs: frozenUntilThawed(out) ?? heard };
  });
  // The workload's frozen time as the hosts report their thaws, and as heard here.
  ctx.log.info('cluster thawed', {
    opId: op.opId,
    thawsMs: took,
    frozenMs: next.frozenMs,
    heardMs: heard,
  });
  return op.phase('storing');
}

/**
 * Thaw `members` on `host` with one request (one each on an agent from before `thaw-many`);
 * when, in the host's clock, the last of them was thawed, where the agent says.
 */
async function thawHost(
  ctx: ClusterContext,
  host: string,
  members: readonly MemberItem[],
): Promise<number | undefined> {
  try {
    const r = await ctx.agent(host, 'thaw-many', { jobIds: members.map((m) => m.jobId) });
    return r.thawedAtMs;
  } catch (err) {
    if (!isUnknownOp(err)) throw toDroverError(err);
    await Promise.all(members.map((m) => ctx.agent(host, 'thaw', { jobId: m.jobId })));
    return undefined;
  }
}

/**
 * Image moves at once on one host. A move sends four files at once, each sealed on its way from
 * the dump; two a host keep its uploads going while the other's pack is sealed, with every host
 * storing at once.
 */
export const PUSHES_PER_HOST = 2;

type Pushed = { files: ImageSetJob['files']; sizeBytes: number; m: MemberItem };

/**
 * storing: each image into the set's object store (sealed), its files and checksums recorded:
 * PUSHES_PER_HOST at a time on each host, every host at once, the records written behind the
 * pushes (the set's files first, then the job's `stored`, so a job recorded stored is in the set).
 */
async function storeAll(
  ctx: ClusterContext,
  op: Handle,
  cur: CheckpointRecord,
): Promise<CheckpointRecord> {
  const name = cur.imageSet;
  const key = await setKey(ctx, name);
  const writes = new BatchedWrites<Pushed>(async (batch) => {
    await ctx.sets.mutate(name, (s) =>
      s
        ? {
            ...s,
            jobs: s.jobs.map((j) => {
              const p = batch.get(j.jobId);
              return p
                ? {
                    ...j,
                    files: p.files,
                    sizeBytes: p.sizeBytes,
                    frozenAtMs: p.m.frozenAtMs ?? 0,
                    dumpMs: p.m.dumpMs ?? 0,
                  }
                : j;
            }),
          }
        : null,
    );
    await op.members(
      new Map([...batch].map(([id, p]) => [id, { state: 'stored', sizeBytes: p.sizeBytes }])),
    );
  });
  // Hosts whose agents have no `image-move` (older, in a rolling upgrade): they push, and their
  // local copies go at the end (finishCheckpoint).
  const pushOnly = new Set<string>();
  const store = async (m: MemberItem): Promise<AgentReplies['image-push']> => {
    const req = { imageId: m.imageId, prefix: `${name}/${m.jobId}`, key };
    if (!pushOnly.has(m.host)) {
      try {
        return await ctx.agent(m.host, 'image-move', req, LONG_MS);
      } catch (err) {
        if (!isUnknownOp(err)) throw toDroverError(err);
        pushOnly.add(m.host);
      }
    }
    return ctx.agent(m.host, 'image-push', req, LONG_MS);
  };
  try {
    await runGroups(
      [...byHost(cur.members.filter((m) => m.state === 'dumped')).values()],
      () => PUSHES_PER_HOST,
      async (m) => {
        const pushed = await store(m);
        writes.add(m.jobId, { files: pushed.files, sizeBytes: pushed.sizeBytes, m });
      },
    );
  } finally {
    await writes.flush().catch((e: unknown) => ctx.log.warn('cannot record pushes', { err: e }));
  }
  // A write that failed fails the phase: the set must name every file it holds.
  await writes.flush();
  return op.phase(leavesRunning(cur) ? 'finished' : 'stopping');
}

/**
 * stopping: every image is stored, so from here the operation only goes forward. A job that
 * cannot be stopped is thawed and keeps running (reported); the set is complete either way.
 */
async function stopAll(
  ctx: ClusterContext,
  op: Handle,
  cur: CheckpointRecord,
): Promise<CheckpointRecord> {
  await forEachLimit(cur.members, PARALLEL, async (m) => {
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
  await op.update((o) => ({ ...o, frozenMs: frozenFor(o) }));
  return op.phase('finished');
}

/** finished: the set is complete, the hosts' local copies go, the verdict is recorded. */
async function finishCheckpoint(
  ctx: ClusterContext,
  op: Handle,
  cur: CheckpointRecord,
): Promise<OperationRecord> {
  const name = cur.imageSet;
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
  await Promise.all(cur.members.map((m) => dropLocalImage(ctx, m)));
  const failed = cur.members.filter((m) => m.state === 'failed');
  const done = await op.update((o) => ({
    ...o,
    state: failed.length ? 'failed' : 'done',
    error: failed.length
      ? { code: 'PARTIAL', message: `${failed.length} job(s) could not be stopped; they run on` }
      : null,
    members: o.members.map((m) => (m.state === 'failed' ? m : { ...m, state: 'done' })),
  }));
  ctx.log.info('cluster checkpoint finished', {
    opId: op.opId,
    set: name,
    skewMs: done.freezeSkewMs,
    sizeBytes: set?.value.sizeBytes,
  });
  await applyRetention(ctx).catch((err: unknown) =>
    ctx.log.warn('image-set retention failed', { err }),
  );
  return done;
}

/** The one rollback exit, before `stopping`: thaw every job where it was, drop every image. */
async function rollBackCheckpoint(
  ctx: ClusterContext,
  op: Handle,
  cause: DroverError,
): Promise<OperationRecord> {
  ctx.log.warn('cluster checkpoint failed; rolling back', { opId: op.opId, err: cause });
  const cur = await op.rollingBack(cause);
  const name = cur.imageSet;
  const notes: string[] = [];
  await Promise.all(
    cur.members.map(async (m) => {
      // The job may still be in a dump the failed call gave up waiting for: thaw waits its turn.
      await persist(ctx, () => ctx.agent(m.host, 'thaw', { jobId: m.jobId }, LONG_MS)).catch(
        (err: unknown) => {
          const e = toDroverError(err);
          if (e.code !== ErrorCode.FailedPrecondition) notes.push(`${m.jobId}: ${e.message}`);
        },
      );
      await dropLocalImage(ctx, m);
    }),
  );
  await ctx.objects.deletePrefix(`${name}/`).catch((e: unknown) => cause.suppress(e));
  await ctx.sets.delete(name).catch((e: unknown) => cause.suppress(e));
  await ctx.keys.delete(name).catch((e: unknown) => cause.suppress(e));
  return op.rolledBack(
    cause,
    `${cause.message}; every job was thawed where it was` +
      (notes.length ? ` (could not thaw: ${notes.join('; ')})` : ''),
  );
}

/** The jobs of the cut: every running one (`--all`) or those named, each where it runs. */
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
  for (const id of new Set(req.jobs)) {
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

/**
 * From the first job frozen to the last thawed, as the hosts report them (each host's clock less
 * its estimated offset from the controller's); null unless every host of the cut said when.
 */
function frozenUntilThawed(o: CheckpointRecord): number | null {
  const freezes = o.freezes ?? [];
  if (!freezes.length || freezes.some((f) => f.thawedAtMs === undefined)) return null;
  const offset = new Map(freezes.map((f) => [f.host, f.offsetMs ?? 0]));
  const frozen = o.members
    .filter((m) => m.frozenAtMs !== null)
    .map((m) => m.frozenAtMs! - (offset.get(m.host) ?? 0));
  if (!frozen.length) return null;
  const thawed = freezes.map((f) => f.thawedAtMs! - (f.offsetMs ?? 0));
  return Math.round(Math.max(...thawed) - Math.min(...frozen));
}

/** From the first freeze to now (the thaw or the stop). */
function frozenFor(o: CheckpointRecord): number | null {
  const times = o.members.map((m) => m.frozenAtMs).filter((t): t is number => t !== null);
  return times.length ? Math.round(Date.now() - Math.min(...times)) : null;
}

function defaultSetName(): string {
  return `set-${new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)}`;
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

/** To 0.01 ms. */
function hundredths(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** Last minus first of some hosts' times, to 0.1 ms. */
function spread(times: readonly number[]): number {
  return Math.round((Math.max(...times) - Math.min(...times)) * 10) / 10;
}
