/**
 * The destination side of a live migration: prepare (capacity, abilities, a one-time stream
 * token), receive the images into tmpfs, restore with the same PIDs, report the job running.
 * Any failure cleans up everything it made here and tells the source in-band.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { JobCgroup } from '@drover/cgroup';
import { DroverError, ErrorCode, settleAll, toDroverError } from '@drover/common';
import {
  errorToFailure,
  JobKind,
  JobState,
  MigrationState,
  type AgentReplies,
  type AgentRequest,
  type MigrationRecord,
} from '@drover/protocol';
import { startLazyPages, logTail, type LazyPagesDaemon, type SwrkSession } from '@drover/criu';
import { receiveFiles, type StreamReceiver } from '@drover/transfer';
import type { Agent } from '../agent.js';
import { restoreJobFiles } from '../job-image.js';
import { updateHostsFile } from '../job-hosts.js';
import { addressOf, announceJob, checkJobBridge } from '../job-network.js';
import { availableMemory } from '../host-facts.js';
import { blankRecord, LIVE_STATES, toJobInfo, type JobRecord } from '../job-store.js';
import { refreshMain } from '../job-main.js';
import { isSameLiveProcess, procEntry, startTicks } from '@drover/native';
import { cpuFlags } from '../preflight.js';
import type { MigrationContext } from './context.js';
import {
  advance,
  FINAL_STATES,
  mark,
  MigrationStore,
  newMigrationRecord,
} from './migration-store.js';
import { makeScratch, removeScratch, scratchSpace } from './scratch.js';
import { admit } from './admission.js';
import {
  checkPagesArrived,
  dropOnePage,
  localAddressToward,
  pageTls,
  receivePages,
  watchPageConnection,
  type PageReceiver,
} from './page-channel.js';
import { STREAM_IDLE_MS } from './source.js';

/** A prepared migration waits this long for its stream before giving up. */
const PREPARE_TTL_MS = 60_000;

/** True while this process is preparing or receiving `migrationId` (recovery leaves it alone). */
export function isReceiving(migrationId: string): boolean {
  return live.has(migrationId) || preparing.has(migrationId);
}

/** Migrations being prepared here: their record is saved before they are `live`. */
const preparing = new Set<string>();

/** Destination-side bookkeeping that does not survive a restart (it need not). */
const live = new Map<
  string,
  {
    t0: number;
    timer: NodeJS.Timeout;
    scratch: string;
    /** post-copy: the source's page server, which our lazy-pages daemon reads. */
    pageServer: { host: string; port: number } | null;
    /** stop-copy: our page server, receiving the pages while the source dumps. */
    pages: PageReceiver | null;
    /** The CRIU the restore will run in, started at prepare; null once the restore took it. */
    restoreCriu: SwrkSession | null;
  }
>();

/** Prepare to receive a job; refuses, changing nothing, when this host cannot take it. */
export async function prepareMigration(
  agent: Agent,
  ctx: MigrationContext,
  req: AgentRequest<'migrate-prepare'>,
): Promise<AgentReplies['migrate-prepare']> {
  const t0 = performance.now();
  const job = req.job;
  // The controller must have allowed exactly this migration: checked before anything else, so
  // an unauthorized peer learns nothing about this host and nothing is created.
  ctx.authorizations.consume({ jobId: job.id, source: req.source, ticket: req.ticket });
  const refuse = (why: string, details: Record<string, unknown> = {}): never => {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `${agent.config.hostId} cannot take job ${job.id}: ${why}`,
      {
        details: { jobId: job.id, host: agent.config.hostId, ...details },
      },
    );
  };
  const existing = await agent.store.load(job.id).catch(() => null);
  if (existing && LIVE_STATES.includes(existing.state))
    refuse(`a job ${job.id} is already ${existing.state} here`);
  if (agent.store.jobDir(job.id) !== job.jobDir) {
    refuse(
      `its job directory ${job.jobDir} differs from this host's ${agent.store.jobDir(job.id)} (use the same state dir on every host)`,
    );
  }
  const short = admit({
    mode: req.mode,
    memoryBytes: req.memoryBytes,
    availableBytes: (await availableMemory()) - agent.config.reserveMemoryBytes,
    scratch: await scratchSpace(),
  });
  if (short) refuse(short.why, short.details);
  const liveJobs = (await agent.store.list()).filter((j) => LIVE_STATES.includes(j.state)).length;
  if (liveJobs >= agent.config.maxJobs)
    refuse(`it already runs ${liveJobs} jobs (limit ${agent.config.maxJobs})`, {
      reason: 'capacity',
    });
  const mine = new Set(await cpuFlags());
  const missing = req.cpuFlags.filter((f) => !mine.has(f));
  if (missing.length)
    refuse(`its CPU lacks ${missing.join(' ')}`, { reason: 'cpu', missingFlags: missing });
  if (req.mode === 'post-copy' && !agent.features.lazyPages)
    refuse('CRIU here has no lazy pages (post-copy)');
  // A job with its own address hangs off this host's job bridge once restored.
  if (job.network.mode === 'job') checkJobBridge(agent.config.hostId, agent.config.jobBridge);
  if (req.mode === 'post-copy' && !req.pageServer)
    refuse('post-copy without a page server to read from');
  if (req.mode !== 'post-copy' && !req.pageFrom)
    refuse('stop-copy without the address the pages come from');
  if (job.kind === JobKind.adopted) {
    const taken = req.pids.filter((p) => {
      const e = procEntry(p);
      return e !== null && e.state !== 'Z';
    });
    if (taken.length)
      refuse(`the adopted tree's PIDs ${taken.join(', ')} are in use here`, { takenPids: taken });
  }

  // From its first record on, recovery (a round may be running now) leaves this migration
  // alone: it is this process's, not one a dead agent left.
  preparing.add(req.migrationId);
  try {
    const store = new MigrationStore(agent.config.stateDir);
    const rec = newMigrationRecord({
      migrationId: req.migrationId,
      jobId: job.id,
      role: 'destination',
      source: req.source,
      destination: agent.config.hostId,
      mode: req.mode,
      state: MigrationState.prepared,
    });
    advance(rec, MigrationState.prepared, t0);
    // The rest of the handshake (abort, commit, status) must show the same ticket.
    await store.saveTicket(rec.migrationId, 'destination', req.ticket);
    await store.save(rec);
    const scratch = await makeScratch(
      agent.config.hostId,
      rec.migrationId,
      'images',
      agent.config.stateDir,
    );
    // stop-copy: the pages arrive here while the source dumps, CRIU to CRIU, admitted from the
    // source's address only. post-copy: we pull them later from the source, which admits us.
    const pages =
      req.mode === 'post-copy'
        ? null
        : await receivePages(agent.criu, {
            host: ctx.advertise.host,
            peer: req.pageFrom!,
            imagesDir: scratch.dir,
            tls: pageTls(ctx.tlsFiles, 'server'),
          });
    const token = randomBytes(32).toString('hex');
    const timer = setTimeout(
      () =>
        void abortMigration(
          agent,
          ctx,
          { migrationId: rec.migrationId },
          'no stream arrived in time',
        ),
      PREPARE_TTL_MS,
    );
    timer.unref();
    live.set(rec.migrationId, {
      t0,
      timer,
      scratch: scratch.dir,
      pageServer: req.pageServer ?? null,
      pages,
      // Started now, its start-up is not in the job's frozen window.
      restoreCriu: agent.criu.startSession(),
    });
    // Only the source's agent certificate may open the stream (when streams use TLS).
    ctx.streams.expect(
      rec.migrationId,
      token,
      (receiver) => receive(agent, ctx, rec.migrationId, job, receiver),
      { peer: req.source },
    );
    return {
      streamHost: ctx.advertise.host,
      streamPort: ctx.advertise.port,
      token,
      scratchDir: scratch.dir,
      ...(pages ? { pages: { host: pages.host, port: pages.port } } : {}),
      ...(req.pageServer ? { pageFrom: await localAddressToward(req.pageServer.host) } : {}),
    };
  } finally {
    preparing.delete(req.migrationId);
  }
}

/** The stream arrived: take the images, restore, answer. */
async function receive(
  agent: Agent,
  ctx: MigrationContext,
  migrationId: string,
  job: AgentRequest<'migrate-prepare'>['job'],
  receiver: StreamReceiver,
): Promise<void> {
  const store = new MigrationStore(agent.config.stateDir);
  const state = live.get(migrationId);
  if (!state) {
    await receiver.sendError(
      new DroverError(ErrorCode.NotFound, `migration ${migrationId} is not prepared here`),
    );
    return;
  }
  clearTimeout(state.timer);
  const rec = await store.load(migrationId, 'destination');
  let cg: JobCgroup | null = null;
  let created = false;
  let lazy = null as LazyPagesDaemon | null;
  try {
    advance(rec, MigrationState.receiving, state.t0);
    await store.save(rec);
    const got = await receiveFiles(receiver, state.scratch, { idleTimeoutMs: STREAM_IDLE_MS });
    rec.stats.bytes = got.bytes;
    rec.stats.files = got.files;
    mark(rec, 'received', state.t0);
    if (state.pages) {
      if (ctx.faults.dropPage) await dropOnePage(state.scratch);
      await checkPagesArrived(state.scratch, state.pages);
    }
    advance(rec, MigrationState.restoring, state.t0);
    await store.save(rec);
    const tRestore = performance.now();
    const restored = await receiver.keepAlive(
      agent.withJob(job.id, async () => {
        mark(rec, 'job-lock', state.t0);
        const jobDir = await agent.store.createJobDir(job.id);
        created = true;
        const incoming: JobRecord = {
          ...blankRecord(job.id, agent.config.hostId, jobDir),
          ...job,
          jobDir,
          host: agent.config.hostId,
        };
        // Three independent steps at once (the job is frozen meanwhile): the job's directory
        // as it was at the dump replaces whatever an earlier visit left; its cgroup; (post-copy)
        // the daemon that fetches pages on fault and in the background. All settle before any
        // failure is thrown, so the cleanup below finds whatever was made.
        const [plan] = await settleAll([
          (async () => {
            const p = await restoreJobFiles(incoming, state.scratch, agent.config.jobBridge);
            await rm(join(jobDir, 'exit-status'), { force: true });
            mark(rec, 'job-files', state.t0);
            return p;
          })(),
          (async () => {
            cg = await JobCgroup.create({
              jobId: job.id,
              parent: agent.config.cgroupParent,
              stateDir: jobDir,
              logger: agent.log,
              ...(job.memoryLimitBytes !== null ? { memoryLimitBytes: job.memoryLimitBytes } : {}),
            });
            mark(rec, 'cgroup', state.t0);
          })(),
          (async () => {
            if (!state.pageServer) return;
            const tls = pageTls(ctx.tlsFiles, 'client');
            lazy = await startLazyPages({
              criuPath: agent.criu.path,
              imagesDir: state.scratch,
              pageServer: { address: state.pageServer.host, port: state.pageServer.port },
              ...(tls ? { tls } : {}),
            });
            mark(rec, 'lazy-pages-ready', state.t0);
          })(),
        ]);
        const session = state.restoreCriu;
        state.restoreCriu = null;
        const r = await restoreWithin(agent.config.restoreTimeoutMs, (onSession) =>
          agent.criu.restore(
            {
              imagesDir: state.scratch,
              ...(lazy ? { lazyPages: true } : {}),
              // Same cgroup paths as on the source (every agent uses the same parent name; each
              // host has its own cgroup tree).
              manageCgroups: 'soft',
              // No hooks here: each NOTIFY would be a round trip to us in the frozen window.
              notify: false,
              ...(job.kind === JobKind.namespaced ? { root: '/' } : {}),
              ...plan,
            },
            { onSession, session },
          ),
        );
        mark(rec, 'criu-restored', state.t0);
        const record: JobRecord = {
          ...incoming,
          state: JobState.running,
          rootPid: r.pid,
          rootStartTicks: startTicks(r.pid),
          restoredFrom: migrationId,
          note: `migrated from ${rec.source} by ${migrationId}`,
        };
        if (job.kind === JobKind.namespaced) await refreshMain(record);
        else Object.assign(record, { mainPid: r.pid, mainPidInside: r.pid });
        const address = addressOf(record.network);
        // Where the job's MAC and address are now, before the source lets its original go.
        if (address) announceJob(r.pid, address, agent.log);
        mark(rec, 'announced', state.t0);
        await agent.store.save(record);
        agent.supervisor.watch(record);
        agent.event(record);
        return record;
      }),
    );
    rec.stats.restoreMs = Math.round(performance.now() - tRestore);
    advance(rec, MigrationState.running, state.t0);
    await store.save(rec);
    await receiver.sendResult({ job: toJobInfo(restored), restoreMs: rec.stats.restoreMs });
    // The page server ended before the restore; its port's admission goes now, after the answer.
    await state.pages
      ?.close()
      .catch((err: unknown) => agent.log.warn("cannot close the page server's port", { err }));
    const address = addressOf(restored.network);
    if (address) {
      // The names of this host's jobs in the job's hosts file: the job runs already (the file
      // it brought names its old neighbours until then), so not in its frozen window.
      await agent
        .withJob(job.id, () => updateHostsFile(restored, address.address, agent.namedJobs()))
        .catch((err: unknown) => agent.log.warn("cannot update a moved job's hosts file", { err }));
    }
    if (lazy) {
      // The job runs; its memory keeps arriving. If the pull fails (or stalls: the connection
      // is cut then) the copy here is broken: kill it (the source still holds the intact
      // original and thaws it once we said so).
      const daemon = lazy;
      watchPageConnection(
        { peer: state.pageServer!.host, peerPort: state.pageServer!.port },
        daemon.done,
        (why) => agent.log.warn('post-copy page connection cut', { migrationId, why }),
      );
      void daemon.done.then(
        () =>
          removeScratch(agent.config.hostId, migrationId, agent.config.stateDir, { inline: true }),
        (err: unknown) =>
          void abortMigration(
            agent,
            ctx,
            { migrationId },
            `post-copy page pull failed: ${String(err)}`,
          ),
      );
      return;
    }
    await removeScratch(agent.config.hostId, migrationId, agent.config.stateDir, { inline: true });
  } catch (err) {
    const first = toDroverError(err);
    lazy?.kill();
    state.pages?.kill();
    await state.pages?.close().catch((e: unknown) => first.suppress(e));
    // Clean up before answering: an ERROR tells the source it may thaw its original, so nothing
    // restored here may still exist by then.
    await cleanup(agent, job.id, cg, created).catch((e: unknown) => first.suppress(e));
    await receiver.sendError(first);
    rec.error = errorToFailure(first);
    advance(rec, MigrationState.aborted, state.t0);
    await store.save(rec).catch(() => undefined);
    await removeScratch(agent.config.hostId, migrationId, agent.config.stateDir).catch(
      () => undefined,
    );
    agent.log.warn('incoming migration failed; cleaned up', { migrationId, err: first });
  } finally {
    await state.restoreCriu?.kill();
    live.delete(migrationId);
  }
}

/**
 * CRIU's restore, its service process killed once it has run `ms`: a restore that cannot finish
 * must not keep the source's original frozen for good. The one known here: a job holding a file
 * lock on storage both hosts share (CRIU takes locks back with blocking calls, and the frozen
 * original still holds them). The caller's cleanup kills what the restore had started.
 */
async function restoreWithin<T>(
  ms: number,
  restore: (onSession: (s: SwrkSession) => void) => Promise<T>,
): Promise<T> {
  let session: SwrkSession | null = null;
  let expired = false;
  const timer = setTimeout(() => {
    expired = true;
    void session?.kill();
  }, ms);
  try {
    return await restore((s) => {
      session = s;
      if (expired) void s.kill();
    });
  } catch (err) {
    if (!expired) throw err;
    throw new DroverError(
      ErrorCode.Timeout,
      `CRIU's restore did not finish within ${ms / 1000} s and was stopped; the job stays on ` +
        'its source (a file lock it holds on storage both hosts share would make the restore ' +
        'wait for good: docs/MIGRATION.md)',
      { cause: err, details: { restoreTimeoutMs: ms } },
    );
  } finally {
    clearTimeout(timer);
  }
}

/** Kill whatever a failed restore left and forget the job here. */
async function cleanup(
  agent: Agent,
  jobId: string,
  cg: JobCgroup | null,
  created: boolean,
): Promise<void> {
  agent.supervisor.release(jobId);
  const group =
    cg ?? (await JobCgroup.open({ jobId, parent: agent.config.cgroupParent }).catch(() => null));
  await group?.destroy({ force: true });
  if (created) await agent.store.remove(jobId);
}

/** Abort: before the source committed, undo everything here (a restored job is killed). */
export async function abortMigration(
  agent: Agent,
  ctx: MigrationContext,
  req: Pick<AgentRequest<'migrate-abort'>, 'migrationId'>,
  why = 'the source aborted',
): Promise<MigrationRecord> {
  const store = new MigrationStore(agent.config.stateDir);
  const rec = await store.load(req.migrationId, 'destination');
  if (FINAL_STATES.includes(rec.state)) return rec;
  const state = live.get(req.migrationId);
  if (state) clearTimeout(state.timer);
  if (state?.pages) {
    // What the page server saw, for whoever reads why the move was abandoned.
    agent.log.warn('page server of an aborted migration', {
      migrationId: req.migrationId,
      port: state.pages.port,
      log: await logTail(join(state.scratch, 'page-server.log'), 12),
    });
  }
  state?.pages?.kill();
  await state?.pages?.close();
  await state?.restoreCriu?.kill();
  ctx.streams.cancel(req.migrationId);
  await agent.withJob(rec.jobId, async () => {
    const job = await agent.store.load(rec.jobId).catch(() => null);
    const ours = job !== null && job.restoredFrom === rec.migrationId;
    if (ours && job.rootPid !== null && isSameLiveProcess(job.rootPid, job.rootStartTicks)) {
      await cleanup(agent, rec.jobId, null, true);
    } else if (ours) {
      await agent.store.remove(rec.jobId);
    }
  });
  rec.note = why;
  advance(rec, MigrationState.aborted, 0);
  await store.save(rec);
  await removeScratch(agent.config.hostId, rec.migrationId, agent.config.stateDir);
  live.delete(req.migrationId);
  return rec;
}

/** The source discarded its copy: the migration is over. */
export async function commitMigration(
  agent: Agent,
  req: AgentRequest<'migrate-commit'>,
): Promise<MigrationRecord> {
  const store = new MigrationStore(agent.config.stateDir);
  const rec = await store.load(req.migrationId, 'destination');
  if (rec.state !== MigrationState.running) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `migration ${rec.migrationId} is ${rec.state}, not running`,
    );
  }
  advance(rec, MigrationState.done, 0);
  await store.save(rec);
  return rec;
}
