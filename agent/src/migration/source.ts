/**
 * The source side of a live migration: one linear sequence with a single rollback exit.
 * prepare (destination) → freeze (checkpointing guard) → dump to tmpfs, leaving the tree frozen
 * → stream the images → the destination restores and reports the job running → only then the
 * original is discarded. Before that report every failure thaws the original where it was.
 */
import { createServer, type AddressInfo } from 'node:net';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { CheckpointGuard, JobCgroup } from '@drover/cgroup';
import { DroverError, ErrorCode, newId, toDroverError } from '@drover/common';
import {
  errorToFailure,
  JobState,
  MigrationState,
  type AgentRequest,
  type JobInfo,
  type MigrationMode,
  type MigrationProgressEvent,
  type MigrationRecord,
} from '@drover/protocol';
import { isTransferError, StreamClient } from '@drover/transfer';
import type { SwrkSession } from '@drover/criu';
import type { Agent } from '../agent.js';
import { dumpOptionsOf } from '../checkpoint.js';
import { checkpointJobFiles, planJobDump } from '../job-image.js';
import {
  addressOf,
  detachJob,
  lockJobNetwork,
  quiesceJob,
  unlockJobNetwork,
  unquiesceJob,
} from '../job-network.js';
import type { JobRecord } from '../job-store.js';
import { isSameLiveProcess, processTree } from '@drover/native';
import { preflight, preflightInputOf, type DestinationFacts } from '../preflight.js';
import type { MigrationContext } from './context.js';
import { advance, MigrationStore, newMigrationRecord } from './migration-store.js';
import { makeScratch, removeScratch } from './scratch.js';

/** A stream with no frame for this long is a dead link (both sides give up). */
export const STREAM_IDLE_MS = 5000;

/**
 * How long a move waits for a job's in-flight connections (accept queues, handshakes) to drain
 * once new ones are held off, before it freezes the job anyway (docs/NETWORK.md).
 */
const QUIESCE_MS = 1000;

/** Jobs above this size go post-copy under `auto` when both hosts can. */
const AUTO_POSTCOPY_BYTES = 512 * 1024 * 1024;

/** Migrations this process is running right now (recovery leaves them alone). */
export const activeSourceMigrations = new Set<string>();

/** Migrate a job off this host. Caller holds no lock; this takes the job's. */
export function migrateJob(
  agent: Agent,
  ctx: MigrationContext,
  req: AgentRequest<'migrate'>,
): Promise<MigrationRecord> {
  return agent.withJob(req.jobId, () => runMigration(agent, ctx, req));
}

async function runMigration(
  agent: Agent,
  ctx: MigrationContext,
  req: AgentRequest<'migrate'>,
): Promise<MigrationRecord> {
  const t0 = performance.now();
  const job = await agent.liveJob(req.jobId);
  if (job.state !== JobState.running) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `job ${job.id} is ${job.state}; only running jobs migrate`,
      {
        details: { jobId: job.id, state: job.state },
      },
    );
  }
  if (req.destination === agent.config.hostId) {
    throw new DroverError(
      ErrorCode.InvalidArgument,
      `job ${job.id} is already on ${req.destination}`,
    );
  }
  const cg = await agent.cgroupOf(job);
  const memoryBytes = (await cg.memoryUsage().catch(() => 0)) || 0;
  const destInfo = await ctx.call(req.destination, 'info', {}, 5000);
  const mode = chooseMode(req.mode ?? 'auto', agent, destInfo.criu, memoryBytes);
  if (req.force !== true) {
    const report = await preflight(
      await preflightInputOf(job),
      destinationFacts(job, req.destination, destInfo.cpuFlags, ctx.call),
    );
    if (!report.ok) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `job ${job.id} cannot move to ${req.destination}: ${report.reasons.map((r) => r.message).join('; ')}`,
        { details: { jobId: job.id, reasons: report.reasons } },
      );
    }
  }
  const store = new MigrationStore(agent.config.stateDir);
  const rec = newMigrationRecord({
    migrationId: newId('mig'),
    jobId: job.id,
    role: 'source',
    source: agent.config.hostId,
    destination: req.destination,
    mode,
    state: MigrationState.preparing,
  });
  advance(rec, MigrationState.preparing, t0);
  // Shown to the destination with every later call about this migration (and kept for recovery).
  await store.saveTicket(rec.migrationId, 'source', req.ticket);
  await store.save(rec);
  activeSourceMigrations.add(rec.migrationId);
  job.state = JobState.migrating;
  await agent.store.save(job);
  agent.event(job);
  const progress = (
    phase: MigrationProgressEvent['phase'],
    extra: Partial<MigrationProgressEvent> = {},
  ): void =>
    agent.publish('migration', {
      migrationId: rec.migrationId,
      jobId: job.id,
      destination: req.destination,
      phase,
      ...extra,
    } satisfies MigrationProgressEvent);

  let guard: CheckpointGuard | null = null;
  const net = addressOf(job.network);
  let held = false;
  let doneSent = false;
  let tFreeze = 0;
  let pageDump: Promise<unknown> | null = null;
  let lazySession: SwrkSession | null = null;
  try {
    const pageServer =
      mode === 'post-copy'
        ? { host: ctx.advertise.host, port: await freePort(ctx.advertise.host) }
        : null;
    const prepared = await ctx.call(req.destination, 'migrate-prepare', {
      ...(pageServer ? { pageServer } : {}),
      migrationId: rec.migrationId,
      source: agent.config.hostId,
      ticket: req.ticket,
      mode,
      job: migratingJob(job),
      memoryBytes,
      cpuFlags: (await agent.info()).cpuFlags,
      pids: processTree(job.rootPid!).map((p) => p.pid),
    });
    advance(rec, MigrationState.prepared, t0);
    progress('prepared');

    const scratch = await makeScratch(
      agent.config.hostId,
      rec.migrationId,
      'images',
      agent.config.stateDir,
    );
    if (scratch.onDisk)
      rec.note = 'no tmpfs on this host: images passed through the state directory';
    const plan = await planJobDump(job);
    if (net) {
      // New connections are held off (their SYNs retransmit to wherever the job runs next) and
      // the ones in flight get a moment to be accepted, so the dump finds none to drop.
      held = true;
      const q = await quiesceJob(job.id, job.rootPid!, QUIESCE_MS);
      rec.stats.inFlightDropped = q.inFlight;
    }
    tFreeze = performance.now();
    guard = await cg.freezeForCheckpoint();
    if (net) await lockJobNetwork(job.id);
    advance(rec, MigrationState.frozen, t0);
    await store.save(rec);

    advance(rec, MigrationState.dumping, t0);
    // leave-running: the tree stays, frozen by our guard, until the destination runs it.
    const dumpOptions = {
      pid: job.rootPid!,
      imagesDir: scratch.dir,
      leaveRunning: true,
      ...(cg.paths.freezer ? { freezeCgroup: cg.paths.freezer } : {}),
      ...dumpOptionsOf(plan),
    };
    if (pageServer) {
      // post-copy: CRIU writes everything but the memory, signals status-ready, then serves
      // pages until the destination has them all; the DUMP reply comes only after that.
      let ready!: () => void;
      const imagesReady = new Promise<void>((r) => (ready = r));
      const tDump = performance.now();
      pageDump = agent.criu.dump(
        {
          ...dumpOptions,
          lazyPages: true,
          pageServer: { address: pageServer.host, port: pageServer.port },
        },
        { hooks: { 'status-ready': () => ready() }, onSession: (sw) => (lazySession = sw) },
      );
      pageDump.catch(() => undefined);
      await Promise.race([
        imagesReady,
        pageDump.then(() => {
          throw new DroverError(ErrorCode.Internal, 'lazy dump ended before it was ready');
        }),
      ]);
      rec.stats.dumpMs = Math.round(performance.now() - tDump);
    } else {
      const dump = await agent.criu.dump(dumpOptions);
      rec.stats.dumpMs = Math.round(dump.durationMs);
    }
    // The job's directory travels in the images, as it is now that the job is frozen.
    await checkpointJobFiles(job, plan, scratch.dir);
    // What the stream will carry: the images and the job's directory (for progress and ETA).
    const totalBytes = await bytesToSend(scratch.dir);
    progress('dumped', { dumpMs: rec.stats.dumpMs, totalBytes });

    advance(rec, MigrationState.transferring, t0);
    await store.save(rec);
    const tTransfer = performance.now();
    const client = await StreamClient.connect({
      host: prepared.streamHost,
      port: prepared.streamPort,
      migrationId: rec.migrationId,
      token: prepared.token,
      // The destination's certificate must name it: agent <destination>.
      ...(ctx.tls ? { tls: { ...ctx.tls, peer: req.destination } } : {}),
      faults: ctx.faults,
      idleTimeoutMs: STREAM_IDLE_MS,
      onProgress: (p) =>
        progress('transferring', {
          bytes: p.bytes,
          totalBytes,
          rateBytesPerSec: Math.round(p.rateBytesPerSec),
        }),
    });
    let result: { job: JobInfo; restoreMs: number };
    try {
      const sent = await client.sendDirectory(scratch.dir);
      rec.stats.files = sent.files;
      rec.stats.bytes = sent.bytes;
      rec.stats.pages = await countPages(scratch.dir);
      rec.stats.transferMs = Math.round(performance.now() - tTransfer);
      advance(rec, MigrationState.awaiting, t0);
      doneSent = true;
      result = (await client.finish()) as { job: JobInfo; restoreMs: number };
    } catch (err) {
      await client.abort(toDroverError(err));
      throw err;
    }
    rec.stats.restoreMs = result.restoreMs;
    rec.stats.frozenMs = Math.round(performance.now() - tFreeze);
    if (pageDump) {
      // The job runs on the destination; its memory still comes from the frozen original here.
      // Not a state of the record (it is still awaiting), but a phase of its timeline.
      rec.timeline.push({ phase: 'pulling-pages', atMs: Math.round(performance.now() - t0) });
      progress('pulling-pages');
      try {
        await pageDump;
      } catch (err) {
        // The pages did not all arrive: the destination's copy is broken; ours is intact.
        await ctx
          .call(
            req.destination,
            'migrate-abort',
            { migrationId: rec.migrationId, ticket: req.ticket },
            10_000,
          )
          .catch((e: unknown) => toDroverError(err).suppress(e));
        doneSent = false;
        throw err;
      }
      rec.stats.pages = await countPages(scratch.dir);
    }
    await commit(agent, ctx, store, rec, job, cg, guard, t0);
    guard = null;
    held = false;
    await removeScratch(agent.config.hostId, rec.migrationId, agent.config.stateDir);
    progress('done', { stats: rec.stats });
    return rec;
  } catch (err) {
    const first = toDroverError(err);
    if (lazySession) await killLazyDump(agent, rec.migrationId, lazySession);
    if (doneSent && !isRemoteRefusal(err)) {
      // The destination may have restored the job: ask it before touching the original.
      const outcome = await settleWithDestination(ctx, rec, req.ticket);
      if (outcome === 'running') {
        await commit(agent, ctx, store, rec, job, cg, guard, t0);
        held = false;
        return rec;
      }
      if (outcome === 'unknown') {
        advance(rec, MigrationState.inDoubt, t0);
        rec.error = errorToFailure(first);
        rec.note =
          'the destination could not be asked whether it runs the job; the original stays frozen';
        await store.save(rec);
        throw first.suppress(new Error(rec.note));
      }
    } else {
      await ctx
        .call(
          req.destination,
          'migrate-abort',
          { migrationId: rec.migrationId, ticket: req.ticket },
          5000,
        )
        .catch((e: unknown) => {
          // An unreachable destination cannot have restored anything before DONE: safe to go on.
          first.suppress(e);
        });
    }
    await rollback(agent, store, rec, job, guard, held, first, t0);
    throw first;
  } finally {
    activeSourceMigrations.delete(rec.migrationId);
    if (rec.state === MigrationState.rolledBack) {
      await removeScratch(agent.config.hostId, rec.migrationId, agent.config.stateDir).catch(
        () => undefined,
      );
    }
  }
}

/** The destination runs the job: discard the frozen original and finish the record. */
async function commit(
  agent: Agent,
  ctx: MigrationContext,
  store: MigrationStore,
  rec: MigrationRecord,
  job: JobRecord,
  cg: JobCgroup,
  guard: CheckpointGuard | null,
  t0: number,
): Promise<void> {
  advance(rec, MigrationState.committing, t0);
  await store.save(rec);
  agent.release(job.id);
  await releaseOriginalNetwork(job);
  await guard?.release({ thaw: false });
  // Kills what is left of the original (thawing first where a v1 freezer needs it to die).
  await cg.destroy({ force: true });
  job.state = JobState.migrated;
  job.note = `moved to ${rec.destination} by ${rec.migrationId}`;
  job.rootPid = null;
  job.mainPid = null;
  job.rootStartTicks = null;
  await agent.store.save(job);
  agent.event(job);
  await ctx
    .call(
      rec.destination,
      'migrate-commit',
      { migrationId: rec.migrationId, ticket: await store.ticket(rec.migrationId) },
      5000,
    )
    .catch((err: unknown) =>
      agent.log.warn('destination missed the commit; it finishes on its own', {
        err,
        migrationId: rec.migrationId,
      }),
    );
  rec.stats.totalMs = Math.round(performance.now() - t0);
  advance(rec, MigrationState.done, t0);
  await store.save(rec);
  agent.log.info('migrated', { jobId: job.id, to: rec.destination, stats: rec.stats });
}

/**
 * The destination runs the job: the original's link goes before the original does, so nothing
 * its dying sockets send (FINs, resets) reaches the segment where the job's address now lives.
 */
export async function releaseOriginalNetwork(job: JobRecord): Promise<void> {
  if (!addressOf(job.network)) return;
  await detachJob(job.id);
  await unquiesceJob(job.id);
}

/** The move failed: the original's link carries traffic again, new connections included. */
export async function reopenOriginalNetwork(job: JobRecord): Promise<void> {
  if (!addressOf(job.network)) return;
  await unlockJobNetwork(job.id);
  await unquiesceJob(job.id);
}

/** Thaw the original where it was and record why. */
async function rollback(
  agent: Agent,
  store: MigrationStore,
  rec: MigrationRecord,
  job: JobRecord,
  guard: CheckpointGuard | null,
  held: boolean,
  first: DroverError,
  t0: number,
): Promise<void> {
  try {
    if (held) await reopenOriginalNetwork(job);
  } catch (e) {
    first.suppress(e);
  }
  try {
    if (guard) await guard.release({ thaw: true });
  } catch (e) {
    first.suppress(e);
  }
  job.state =
    job.rootPid !== null && isSameLiveProcess(job.rootPid, job.rootStartTicks)
      ? JobState.running
      : JobState.lost;
  if (job.state === JobState.lost)
    job.note = `lost during migration ${rec.migrationId}: ${first.message}`;
  await agent.store.save(job).catch((e: unknown) => first.suppress(e));
  agent.event(job);
  rec.error = errorToFailure(first);
  advance(rec, MigrationState.rolledBack, t0);
  await store.save(rec).catch((e: unknown) => first.suppress(e));
  agent.log.warn('migration rolled back; the job runs here as before', {
    jobId: job.id,
    err: first,
  });
}

/** Ask the destination (over NATS, not the broken stream) what became of the migration. */
export async function settleWithDestination(
  ctx: MigrationContext,
  rec: MigrationRecord,
  ticket: string,
  attempts = 10,
): Promise<'running' | 'aborted' | 'unknown'> {
  for (let i = 0; i < attempts; i++) {
    try {
      const st = await ctx.call(
        rec.destination,
        'migrate-status',
        { migrationId: rec.migrationId, ticket },
        2000,
      );
      if (st.state === MigrationState.running || st.state === MigrationState.done) return 'running';
      if (st.state === MigrationState.restoring || st.state === MigrationState.receiving) {
        await sleep(500); // still at work: let it finish or fail
        continue;
      }
      await ctx.call(
        rec.destination,
        'migrate-abort',
        { migrationId: rec.migrationId, ticket },
        5000,
      );
      return 'aborted';
    } catch (err) {
      if (err instanceof DroverError && err.code === ErrorCode.NotFound) return 'aborted';
      await sleep(500);
    }
  }
  return 'unknown';
}

/** A refusal the destination sent in-band: it has cleaned up and runs nothing. */
function isRemoteRefusal(err: unknown): boolean {
  return isTransferError(err, 'remote');
}

function chooseMode(
  asked: MigrationMode,
  agent: Agent,
  dest: { lazyPages: boolean; memTrack: boolean },
  memoryBytes: number,
): Exclude<MigrationMode, 'auto'> {
  if (asked === 'pre-copy' && !(agent.features.memTrack && dest.memTrack)) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      'pre-copy needs memory tracking (soft-dirty) on both hosts, and this kernel has none (CONFIG_MEM_SOFT_DIRTY is off); use stop-copy or post-copy',
      {
        details: {
          feature: 'mem_track',
          source: agent.features.memTrack,
          destination: dest.memTrack,
        },
      },
    );
  }
  if (asked === 'pre-copy') {
    // Where the kernel tracks memory, pre-copy iterations are not implemented yet either.
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      'pre-copy is not available in this version; use stop-copy or post-copy',
      {
        details: { mode: asked },
      },
    );
  }
  const lazy = agent.features.lazyPages && dest.lazyPages;
  if (asked === 'post-copy') {
    if (!lazy) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        'post-copy needs CRIU lazy pages (userfaultfd) on both hosts',
        { details: { source: agent.features.lazyPages, destination: dest.lazyPages } },
      );
    }
    return 'post-copy';
  }
  if (asked === 'auto')
    return lazy && memoryBytes > AUTO_POSTCOPY_BYTES ? 'post-copy' : 'stop-copy';
  return 'stop-copy';
}

/** A free TCP port on `host` for CRIU's page server (bound, read, released). */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Stop a lazy dump still serving pages (its swrk), so the frozen original can be thawed. */
async function killLazyDump(
  agent: Agent,
  migrationId: string,
  session: SwrkSession,
): Promise<void> {
  agent.log.warn('stopping the lazy dump of a failed migration', { migrationId, pid: session.pid });
  // CRIU's tracer dies; the tree, still held by our freezer, is released as it was.
  await session.kill();
}

function migratingJob(j: JobRecord): AgentRequest<'migrate-prepare'>['job'] {
  return {
    id: j.id,
    name: j.name,
    kind: j.kind,
    command: j.command,
    cwd: j.cwd,
    env: j.env,
    ...(j.hostname !== null ? { hostname: j.hostname } : {}),
    ...(j.memoryLimitBytes !== null ? { memoryLimitBytes: j.memoryLimitBytes } : {}),
    shellJob: j.shellJob,
    startedAt: j.startedAt,
    jobDir: j.jobDir,
    ...(addressOf(j.network) ? { address: addressRequest(j) } : {}),
  } as unknown as AgentRequest<'migrate-prepare'>['job'];
}

/** The job's address as the wire carries it (the MAC follows from it). */
function addressRequest(j: JobRecord): { address: string; prefixLength: number; gateway?: string } {
  const a = addressOf(j.network)!;
  return {
    address: a.address,
    prefixLength: a.prefixLength,
    ...(a.gateway !== null ? { gateway: a.gateway } : {}),
  };
}

/**
 * What preflight needs to know about a destination. The job's own directory (its logs) is left
 * out of the file check: the destination creates it and the logs travel with the images.
 */
export function destinationFacts(
  job: Pick<JobRecord, 'jobDir'>,
  host: string,
  cpuFlags: readonly string[],
  call: MigrationContext['call'],
): DestinationFacts {
  const own = `${job.jobDir}/`;
  return {
    host,
    cpuFlags,
    checkFiles: (files) =>
      call(host, 'files-check', { files: files.filter((f) => !f.path.startsWith(own)) }),
  };
}

/** Bytes the stream sends: the regular files directly in `dir` (images, the job's directory). */
async function bytesToSend(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isFile()) total += (await stat(join(dir, e.name))).size;
  }
  return total;
}

/** Memory pages in an image directory (pages-*.img are raw 4 KiB pages). */
async function countPages(dir: string): Promise<number> {
  let bytes = 0;
  for (const f of await readdir(dir)) {
    if (f.startsWith('pages-') && f.endsWith('.img')) bytes += (await stat(join(dir, f))).size;
  }
  return Math.floor(bytes / 4096);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
