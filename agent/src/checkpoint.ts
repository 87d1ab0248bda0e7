/**
 * Checkpoint and restore of one job on this host, each one linear sequence with a single
 * rollback exit: a failed checkpoint leaves the job running as it was; a failed restore leaves
 * nothing behind.
 */
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { JobCgroup, type CheckpointGuard } from '@drover/cgroup';
import { DroverError, ErrorCode, mapLimit, newId, toDroverError } from '@drover/common';
import {
  JobKind,
  JobState,
  type AgentReplies,
  type AgentRequest,
  type ImageFile,
  type ImageInfo,
  type JobInfo,
} from '@drover/protocol';
import type { Criu, NetworkLock, SwrkSession } from '@drover/criu';
import type { Logger } from '@drover/common';
import type { AgentConfig } from './config.js';
import type { NameEntry } from './job-hosts.js';
import type { Supervisor } from './supervisor.js';
import { localImageName, imageKey, openFileInto, sealFile } from './image-crypto.js';
import { MANIFEST_FILE, toImageInfo, type ImageManifest, type ImageStore } from './image-store.js';
import { makeScratch, removeScratch } from './migration/scratch.js';
import type { PreparedDumps } from './prepared-dumps.js';
import { toJobInfo, type JobRecord, type JobStore } from './job-store.js';
import { refreshMain } from './job-main.js';
import { dumpHooksOf, planJobDump, restoreJobFiles, type JobDumpPlan } from './job-image.js';
import {
  addressOf,
  announceJob,
  checkJobBridge,
  detachJob,
  lockJobNetwork,
  unlockJobNetwork,
} from './job-network.js';
import { updateHostsFile } from './job-hosts.js';
import { isSameLiveProcess, processTree, startTicks } from '@drover/native';

/** What checkpoint, restore and discard use of the agent. */
export interface CheckpointHost {
  readonly config: Pick<
    AgentConfig,
    'hostId' | 'stateDir' | 'checkpointOptions' | 'jobBridge' | 'cgroupParent'
  >;
  readonly log: Logger;
  readonly store: JobStore;
  readonly images: ImageStore;
  readonly criu: Criu;
  /** CRIU processes started ahead (a cluster's cut): a dump takes one when there is one. */
  readonly warmDumps?: { take(): SwrkSession | null } | null;
  /** Dumps readied ahead (a cluster's cut): a dump takes its own when there is one. */
  readonly preparedDumps?: Pick<PreparedDumps, 'take'>;
  readonly supervisor: Pick<Supervisor, 'watch' | 'release'>;
  cgroupOf(r: JobRecord): Promise<JobCgroup>;
  /** Publish a job's state as an event. */
  event(r: JobRecord): void;
  /** The cluster's named jobs (for a restored job's /etc/hosts). */
  namedJobs(): readonly NameEntry[];
}

/** CRIU dump options of a job from its dump plan (job-image.ts): the one place they are set. */
export function dumpOptionsOf(plan: JobDumpPlan): {
  externals: string[];
  shellJob: boolean;
  tcpEstablished: boolean;
  skipInFlight: boolean;
  fileLocks: boolean;
  linkRemap: boolean;
  ghostLimitBytes: number;
  evasiveDevices: boolean;
  networkLock: NetworkLock;
} {
  const o = plan.criu;
  return {
    externals: plan.externals,
    shellJob: plan.shellJob,
    tcpEstablished: o.tcpEstablished,
    // By default with tcpEstablished: connections still in a listener's queue are dropped, not
    // a failed dump (docs/NETWORK.md).
    skipInFlight: o.skipInFlight,
    fileLocks: o.fileLocks,
    linkRemap: o.linkRemap,
    ghostLimitBytes: o.ghostLimitBytes,
    evasiveDevices: o.evasiveDevices,
    networkLock: plan.networkLock,
  };
}

/**
 * The `checkpoint-many` requests under way on this host, by run (the checkpoint's operation):
 * `stop` makes each one start no further dump (a dump under way ends as it would).
 */
export class DumpRuns {
  readonly #runs = new Map<string, Set<{ stopped: boolean }>>();

  /** `fn` as one request of `runId`; `stopped` says whether the run was stopped since. */
  async run<T>(runId: string, fn: (stopped: () => boolean) => Promise<T>): Promise<T> {
    const me = { stopped: false };
    const runs = this.#runs.get(runId) ?? new Set();
    this.#runs.set(runId, runs.add(me));
    try {
      return await fn(() => me.stopped);
    } finally {
      runs.delete(me);
      if (runs.size === 0) this.#runs.delete(runId);
    }
  }

  /** Stop every request of `runId` under way; whether there was one. */
  stop(runId: string): boolean {
    const runs = this.#runs.get(runId);
    for (const r of runs ?? []) r.stopped = true;
    return runs !== undefined;
  }
}

/**
 * A cluster checkpoint's dumps on this host (`checkpoint-many`): each job of `req.dumps` through
 * `checkpoint` (the per-job request, its lock and rollback), in the order asked, `req.parallel`
 * CRIU dumps at once (default: one per CPU). A dump holds its place until its CRIU is done
 * (`checkpoint` calls `dumped`), not until its call ends: the next dump's CRIU starts while the
 * last one's image is recorded (its size, manifest and log line: up to tens of milliseconds on a
 * busy host, and the cut's jobs stay frozen until every host's last dump). No dump starts after a
 * failure or once `checkpoint-stop` stopped the run; the first failure is thrown once those
 * running have ended. An image made already by an earlier request for the same dump (a
 * controller that took over the checkpoint) counts as made.
 */
export async function checkpointMany(
  agent: { readonly images: Pick<ImageStore, 'info'>; readonly dumpRuns: DumpRuns },
  req: AgentRequest<'checkpoint-many'>,
  checkpoint: (r: AgentRequest<'checkpoint'>, dumped: () => void) => Promise<ImageInfo>,
): Promise<AgentReplies['checkpoint-many']> {
  const t0 = performance.now();
  const places = new DumpPlaces(req.parallel ?? availableParallelism());
  return agent.dumpRuns.run(req.runId, async (stopped) => {
    let failed: { err: unknown } | null = null;
    const dumps = await Promise.all(
      req.dumps.map(async (d) => {
        const leave = await places.take();
        try {
          if (failed !== null) return null;
          if (stopped()) {
            throw new DroverError(
              ErrorCode.FailedPrecondition,
              `checkpoint ${req.runId} was stopped: job ${d.jobId} was not dumped`,
              { details: { jobId: d.jobId, runId: req.runId } },
            );
          }
          const startedMs = performance.now() - t0;
          const image = await checkpoint(
            {
              jobId: d.jobId,
              imageId: d.imageId,
              key: req.key,
              ...(req.leaveRunning !== undefined ? { leaveRunning: req.leaveRunning } : {}),
            },
            leave,
          ).catch(async (err: unknown) => {
            const made =
              toDroverError(err).code === ErrorCode.AlreadyExists
                ? await agent.images.info(d.imageId)
                : null;
            if (made?.jobId !== d.jobId) throw err;
            return made;
          });
          return {
            image,
            startedMs: ms(startedMs),
            tookMs: ms(performance.now() - t0 - startedMs),
          };
        } catch (err) {
          failed ??= { err };
          return null;
        } finally {
          leave();
        }
      }),
    );
    if (failed !== null) throw (failed as { err: unknown }).err;
    return { dumps: dumps.map((x) => x!) };
  });
}

/**
 * `n` places for dumps (at least 1), taken in the order asked; `take` resolves with the function
 * that gives its place back (once: later calls do nothing).
 */
class DumpPlaces {
  #free: number;
  readonly #waiting: (() => void)[] = [];

  constructor(n: number) {
    this.#free = Number.isInteger(n) && n > 0 ? n : 1;
  }

  async take(): Promise<() => void> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((r) => this.#waiting.push(r));
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    };
  }
}

/**
 * Freeze (checkpointing guard held), dump into tmpfs scratch, seal every file into a new image
 * with the caller's key, then thaw (leave running) or let the job go (stop). The plaintext never
 * touches the disk. Caller holds the job lock.
 */
export async function checkpointJob(
  agent: CheckpointHost,
  req: AgentRequest<'checkpoint'>,
  /** Told once CRIU has made the dump (`checkpoint-many`'s places: the next dump may start). */
  dumped: () => void = () => undefined,
): Promise<ImageInfo> {
  const t0 = performance.now();
  const key = imageKey(req.key);
  const r = await agent.store.loadLive(req.jobId);
  if (r.state !== JobState.running && r.state !== JobState.frozen) {
    throw new DroverError(ErrorCode.FailedPrecondition, `job ${r.id} is ${r.state}`, {
      details: { jobId: r.id, state: r.state },
    });
  }
  const leaveRunning = req.leaveRunning === true;
  const imageId = req.imageId ?? newId('img');
  // Readied before a cluster's cut (prepared-dumps.ts): the image's directory, and the dump plan
  // when it still holds (the same root process).
  const ready = req.imageId === undefined ? null : agent.preparedDumps?.take(imageId, r);
  const dir = ready?.dump.jobId === r.id ? ready.dump.dir : await agent.images.create(imageId);
  const { hostId, stateDir } = agent.config;
  const scratchId = `image-${imageId}`;
  const before = r.state;
  const cg = ready?.fits ? ready.dump.cg : await agent.cgroupOf(r);
  const plan = ready?.fits ? ready.dump.plan : await planJobDump(r, agent.config.checkpointOptions);
  let guard: CheckpointGuard | null = null;
  let killed = false;
  let dumpDir = '';
  // A job frozen by `freeze` (a cluster's cut) is locked already and stays so until `thaw`.
  let locked = false;
  // Such a job is recorded `frozen` by the cut and stays so through a leave-running dump: nothing
  // to record or publish for it here (the cut's frozen window). A restarted agent clears the
  // checkpointing guard of a frozen job as of one checkpointing (supervisor.ts).
  const quiet = before === JobState.frozen && leaveRunning;
  if (!quiet) {
    r.state = JobState.checkpointing;
    await agent.store.save(r);
    agent.event(r);
  }
  try {
    const tFreeze = performance.now();
    guard = await cg.freezeForCheckpoint();
    if (addressOf(r.network) && before !== JobState.frozen) {
      await lockJobNetwork(r.id);
      locked = true;
    }
    const tFrozen = performance.now();
    const pids = processTree(r.rootPid!).map((p) => p.pid);
    dumpDir = (await makeScratch(hostId, scratchId, 'dump', stateDir)).dir;
    const tDump = performance.now();
    let jobDirMs = 0;
    const hooks = dumpHooksOf(r, plan, dumpDir);
    // The job's directory goes into the images at post-dump, while the job is still frozen.
    const dump = await agent.criu.dump(
      {
        pid: r.rootPid!,
        imagesDir: dumpDir,
        leaveRunning,
        ...(cg.paths.freezer ? { freezeCgroup: cg.paths.freezer } : {}),
        ...dumpOptionsOf(plan),
      },
      {
        session: agent.warmDumps?.take() ?? null,
        hooks: {
          'post-dump': async () => {
            const t = performance.now();
            await hooks['post-dump']();
            jobDirMs = performance.now() - t;
          },
        },
      },
    );
    const tDumped = performance.now();
    // The next dump of a `checkpoint-many` may start (only a made dump: after a failed one none
    // does, and that is known when this call has rolled back).
    dumped();
    killed = !leaveRunning;
    if (leaveRunning) {
      if (locked) await unlockJobNetwork(r.id);
      locked = false;
      await guard.release({ thaw: before !== JobState.frozen });
      r.state = before;
    } else {
      // CRIU killed the tree: the job now lives only in its image.
      agent.supervisor.release(r.id);
      await guard.release({ thaw: false });
      await cg.destroy({ force: true });
      r.state = JobState.checkpointed;
      r.rootPid = null;
      r.mainPid = null;
      r.mainStartTicks = null;
      r.rootStartTicks = null;
    }
    const frozenMs = performance.now() - tFreeze;
    guard = null;
    const manifest: ImageManifest = {
      imageId,
      jobId: r.id,
      host: agent.config.hostId,
      dir,
      createdAt: new Date().toISOString(),
      leaveRunning,
      sizeBytes: await agent.images.sizeOf(dumpDir),
      frozenMs: Math.round(frozenMs),
      dumpMs: Math.round(dump.durationMs),
      job: { ...r, state: before },
      pids,
      sealed: true,
    };
    const seal = async (): Promise<void> => {
      manifest.files = await sealImageDir(dumpDir, dir, key, imageId);
      await agent.images.writeManifest(manifest);
      await removeScratch(hostId, scratchId, stateDir);
    };
    if (leaveRunning) {
      // A job that runs again has its image sealed now. One a cluster's cut froze is sealed when
      // it is read, or at its deadline: a move into the image set takes its plaintext instead
      // (image-sets.ts, `moveImage`) and it never reaches this host's disk. Reads wait.
      agent.images.finishLater(
        toImageInfo(manifest),
        () =>
          seal().catch(async (err: unknown) => {
            agent.log.error('cannot seal image; it is gone, the job runs on', { imageId, err });
            await rm(dir, { recursive: true, force: true }).catch(() => undefined);
            await removeScratch(hostId, scratchId, stateDir).catch(() => undefined);
            throw err;
          }),
        before !== JobState.frozen,
        {
          manifest: { ...manifest },
          plainDir: dumpDir,
          discard: async () => {
            await rm(dir, { recursive: true, force: true });
            await removeScratch(hostId, scratchId, stateDir);
          },
        },
      );
    } else {
      await seal();
    }
    if (!quiet) {
      await agent.store.save(r);
      agent.event(r);
    }
    const tEnd = performance.now();
    agent.log.info('checkpointed', {
      jobId: r.id,
      imageId,
      leaveRunning,
      frozenMs: manifest.frozenMs,
      // Where the call's time went (docs/CHECKPOINT.md, "Where the cut's time goes").
      timingsMs: {
        prepare: ms(tFreeze - t0),
        freeze: ms(tFrozen - tFreeze),
        scratch: ms(tDump - tFrozen),
        criu: ms(tDumped - tDump - jobDirMs),
        jobDir: ms(jobDirMs),
        finish: ms(tEnd - tDumped),
        total: ms(tEnd - t0),
      },
    });
    return toImageInfo(manifest);
  } catch (err) {
    const first =
      err instanceof DroverError
        ? err
        : new DroverError(ErrorCode.Internal, String(err), { cause: err });
    // Roll back: the job runs on as it was; the partial image goes.
    try {
      if (locked && !killed) await unlockJobNetwork(r.id);
      if (guard) await guard.release({ thaw: before !== JobState.frozen });
    } catch (e) {
      first.suppress(e);
    }
    if (killed) {
      // The dump stopped the job and its image could not be sealed: bring it back from the
      // plaintext dump, which is still in scratch, rather than lose it.
      await restoreFromDir(agent, { ...r, state: before }, dumpDir, imageId)
        .then((back) => Object.assign(r, back))
        .catch((e: unknown) => first.suppress(e));
    } else {
      r.state = isSameLiveProcess(r.rootPid!, r.rootStartTicks) ? before : JobState.lost;
    }
    if (r.state === JobState.lost || r.state === JobState.checkpointed) {
      r.state = JobState.lost;
      r.note = `lost during a failed checkpoint: ${first.message}`;
    }
    await agent.store.save(r).catch((e: unknown) => first.suppress(e));
    await agent.images.remove(imageId).catch((e: unknown) => first.suppress(e));
    await removeScratch(hostId, scratchId, stateDir).catch((e: unknown) => first.suppress(e));
    agent.event(r);
    throw first;
  }
}

/** To 0.1 ms. */
function ms(x: number): number {
  return Math.round(x * 10) / 10;
}

/** Files of one image sealed at once. */
const SEAL_FILES_AT_ONCE = 4;

/** Seal every file CRIU wrote in `from` into image directory `to`; their plaintexts' checksums. */
async function sealImageDir(
  from: string,
  to: string,
  key: Buffer,
  imageId: string,
): Promise<ImageFile[]> {
  // A few files at once (SEAL_FILES_AT_ONCE): most of an image's files are a few KiB, whose seal
  // is opening and closing files, not crypto.
  return mapLimit((await readdir(from)).sort(), SEAL_FILES_AT_ONCE, async (name) => ({
    name,
    ...(await sealFile(join(from, name), join(to, name), key, localImageName(imageId, name))),
  }));
}

/** Open every sealed file of image `imageId` into `to` (tmpfs scratch); DATA_LOSS if any is damaged. */
async function openImageDir(manifest: ImageManifest, to: string, key: Buffer): Promise<void> {
  for (const name of (await readdir(manifest.dir)).sort()) {
    if (name === MANIFEST_FILE || name.startsWith('.')) continue;
    await openFileInto(
      join(manifest.dir, name),
      join(to, name),
      key,
      localImageName(manifest.imageId, name),
    );
  }
}

/**
 * Restore `manifest` on this host as its job (same id, same PIDs inside). A sealed image is opened
 * with `keyBase64` into tmpfs scratch first — every chunk authenticated before CRIU reads a byte —
 * and the plaintext is gone when this returns. Caller holds the lock.
 */
export async function restoreImage(
  agent: CheckpointHost,
  manifest: ImageManifest,
  leaveFrozen: boolean,
  keyBase64: string,
): Promise<JobInfo> {
  const key = imageKey(keyBase64);
  const job = manifest.job;
  if (job.kind === JobKind.adopted) {
    const taken = manifest.pids.filter((p) =>
      processTree(p).some((e) => e.pid === p && e.state !== 'Z'),
    );
    if (taken.length) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `cannot restore adopted job ${job.id}: its PIDs ${taken.join(', ')} are in use on ${agent.config.hostId}`,
        { details: { jobId: job.id, takenPids: taken } },
      );
    }
  }
  const existing = await agent.store.load(manifest.jobId).catch(() => null);
  if (
    existing &&
    [
      JobState.running,
      JobState.frozen,
      JobState.checkpointing,
      JobState.migrating,
      JobState.starting,
    ].includes(existing.state as never)
  ) {
    if (existing.rootPid !== null && isSameLiveProcess(existing.rootPid, existing.rootStartTicks)) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `job ${manifest.jobId} is still ${existing.state} here; stop it before restoring its image`,
        { details: { jobId: manifest.jobId, state: existing.state } },
      );
    }
  }
  // Images written before local images were sealed are restored as they are.
  if (manifest.sealed !== true) {
    return toJobInfo(await restoreFromDir(agent, job, manifest.dir, manifest.imageId, leaveFrozen));
  }
  const { hostId, stateDir } = agent.config;
  const scratchId = `restore-${manifest.imageId}-${randomBytes(4).toString('hex')}`;
  try {
    const scratch = await makeScratch(hostId, scratchId, 'images', stateDir);
    await openImageDir(manifest, scratch.dir, key);
    return toJobInfo(await restoreFromDir(agent, job, scratch.dir, manifest.imageId, leaveFrozen));
  } finally {
    await removeScratch(hostId, scratchId, stateDir);
  }
}

/** Restore the plaintext image in `imagesDir` as `job`, running (or frozen). */
async function restoreFromDir(
  agent: CheckpointHost,
  job: JobRecord,
  imagesDir: string,
  imageId: string,
  leaveFrozen = false,
): Promise<JobRecord> {
  const jobDir = await agent.store.createJobDir(job.id);
  const address = addressOf(job.network);
  if (address) checkJobBridge(agent.config.hostId, agent.config.jobBridge);
  const plan = await restoreJobFiles({ ...job, jobDir }, imagesDir, agent.config.jobBridge);
  await rm(`${jobDir}/exit-status`, { force: true });
  const cg = await JobCgroup.create({
    jobId: job.id,
    parent: agent.config.cgroupParent,
    stateDir: jobDir,
    logger: agent.log,
    ...(job.memoryLimitBytes !== null ? { memoryLimitBytes: job.memoryLimitBytes } : {}),
  });
  let restored;
  try {
    restored = await agent.criu.restore({
      imagesDir,
      leaveStopped: leaveFrozen,
      manageCgroups: 'soft',
      ...(job.kind === JobKind.namespaced ? { root: '/' } : {}),
      ...plan,
    });
  } catch (err) {
    await cg.destroy({ force: true }).catch((e: unknown) => (err as DroverError).suppress?.(e));
    throw err;
  }
  const r: JobRecord = {
    ...job,
    state: JobState.running,
    rootPid: restored.pid,
    rootStartTicks: startTicks(restored.pid),
    restoredFrom: imageId,
    exitCode: null,
    exitedAt: null,
    signal: null,
    note: null,
    host: agent.config.hostId,
  };
  // Found again by its PID inside the job (job-main.ts), whatever order CRIU brought it back in.
  if (job.kind === JobKind.namespaced) await refreshMain(r);
  if (address) {
    announceJob(restored.pid, address, agent.log);
    await updateHostsFile(r, address.address, agent.namedJobs()).catch((err: unknown) =>
      agent.log.warn("cannot update a restored job's hosts file", { jobId: r.id, err }),
    );
  }
  if (leaveFrozen) {
    // CRIU left every task stopped; hold them with the freezer instead, then clear the stop, so
    // `thaw` is the one operation that resumes the job.
    await cg.freeze();
    for (const p of processTree(restored.pid)) {
      try {
        process.kill(p.pid, 'SIGCONT');
      } catch {
        // gone
      }
    }
    r.state = JobState.frozen;
  }
  await agent.store.save(r);
  agent.supervisor.watch(r);
  agent.event(r);
  agent.log.info('restored', {
    jobId: r.id,
    imageId,
    rootPid: r.rootPid,
    frozen: leaveFrozen,
  });
  return r;
}

/**
 * The end of a stopping cluster checkpoint (or the rollback of a restore): kill a frozen job whose
 * state now lives in image `imageId` (`checkpointed`), or that is being ended (`exited`). A job that
 * is already gone is reported as it is. Caller holds the job lock.
 */
export async function discardJob(
  agent: CheckpointHost,
  req: AgentRequest<'discard'>,
): Promise<JobInfo> {
  const r = await agent.store.load(req.jobId);
  const alive =
    r.rootPid !== null &&
    isSameLiveProcess(r.rootPid, r.rootStartTicks) &&
    r.state !== JobState.exited &&
    r.state !== JobState.checkpointed;
  if (!alive) return toJobInfo(r);
  if (r.state !== JobState.frozen) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `job ${r.id} is ${r.state}; only a frozen job is discarded`,
      { details: { jobId: r.id, state: r.state } },
    );
  }
  agent.supervisor.release(r.id);
  // Its link goes first: nothing the dying sockets send (FINs, resets) reaches the segment.
  if (addressOf(r.network)) await detachJob(r.id);
  // Signals first, thaw after: the frozen tree never runs again.
  await (await agent.cgroupOf(r)).destroy({ force: true });
  r.state = req.imageId !== undefined ? JobState.checkpointed : JobState.exited;
  r.note =
    req.note ??
    (req.imageId !== undefined ? `lives on in image ${req.imageId}` : 'discarded while frozen');
  r.rootPid = null;
  r.mainPid = null;
  r.mainStartTicks = null;
  r.rootStartTicks = null;
  if (r.state === JobState.exited) {
    r.exitedAt = new Date().toISOString();
    r.signal = 'SIGKILL';
  }
  await agent.store.save(r);
  agent.event(r);
  agent.log.info('discarded', { jobId: r.id, imageId: req.imageId ?? null, state: r.state });
  return toJobInfo(r);
}
