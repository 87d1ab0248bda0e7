/**
 * The source side of a live migration: named phases with one rollback exit, the way CRIU's
 * `cr_dump_tasks` reads.
 *
 *   begin     checks (state, preflight) and the record; the job is `migrating`
 *   prepare   the destination readies a stream and (stop-copy) a page server admitting only us;
 *             (post-copy) we admit only the destination to the port our lazy dump will serve
 *   connect   (post-copy) the stream opens (TLS, token) while the job still runs, and is kept
 *             alive with PINGs while it is frozen and dumped: not a step of the frozen window
 *   freeze    new connections held off, the job frozen (checkpointing guard), its network locked
 *   dump      CRIU dumps, leaving the tree frozen: its pages go straight to the destination's
 *             page server over TLS while it runs (post-copy: they stay to be pulled); the job's
 *             directory is archived beside the small images
 *   transfer  the small images and the job's directory go through Drover's framed stream; the
 *             destination checks that every page the dump wrote arrived, restores, and answers
 *   pull      (post-copy) the destination pulls the pages; our dump ends when it has them all
 *   commit    the original's link and then the original are discarded
 *
 * Before the destination reports the job running, any failure rolls back: the destination is
 * told to abort, the job's network reopens and the original thaws where it was. After DONE
 * without an answer the destination is asked; if nobody can say, the original stays frozen
 * (`in-doubt`) — nothing is lost either way.
 *
 * Beside it: `source-admit.ts` (whether and how a job moves: the checks, the mode; the entry
 * point `migrateJob`), `source-dump.ts` (the dump phase, per mode), `source-settle.ts` (asking
 * the destination, releasing or reopening the original's network), `source-world.ts` (everything
 * below, faked in the unit tests).
 */
import { DroverError, ErrorCode, newId, settleAll, toDroverError } from '@drover/common';
import {
  errorToFailure,
  JobState,
  MigrationState,
  type AgentReplies,
  type AgentRequest,
  type JobInfo,
  type MigrationMode,
  type MigrationProgressEvent,
  type MigrationRecord,
} from '@drover/protocol';
import { isTransferError } from '@drover/transfer';
import type { CheckpointGuard } from '@drover/cgroup';
import { PAGE_SIZE, type SwrkSession } from '@drover/criu';
import { isSameLiveProcess } from '@drover/native';
import { dumpOptionsOf } from '../checkpoint.js';
import type { JobDumpPlan } from '../job-image.js';
import { addressOf } from '../job-network.js';
import type { JobRecord } from '../job-store.js';
import { advance, mark, newMigrationRecord } from './migration-store.js';
import { dumpLazy, dumpToPageServer, pagesPulled } from './source-dump.js';
import { settleWithDestination } from './source-settle.js';
import type { SourceWorld, StreamSender } from './source-world.js';

/** A stream with no frame for this long is a dead link (both sides give up). */
export const STREAM_IDLE_MS = 5000;

/**
 * How long a move waits for a job's in-flight connections (accept queues, handshakes) to drain
 * once new ones are held off, before it freezes the job anyway (docs/NETWORK.md).
 */
const QUIESCE_MS = 1000;

/** Migrations this process is running right now (recovery leaves them alone). */
export const activeSourceMigrations = new Set<string>();

/** One migration of `job` from this host, phase by phase. */
export class SourceMigration {
  readonly rec: MigrationRecord;
  private readonly t0 = performance.now();
  private cg: Awaited<ReturnType<SourceWorld['cgroup']>> | null = null;
  private guard: CheckpointGuard | null = null;
  /** New connections are held off / the network is locked: reopen it on rollback. */
  private held = false;
  private doneSent = false;
  private tFreeze = 0;
  private scratch = '';
  private plan: JobDumpPlan | null = null;
  private prepared: AgentReplies['migrate-prepare'] | null = null;
  /** The stream to the destination, once open (before the freeze). */
  private stream: StreamSender | null = null;
  /** What the stream will carry (known once the dump is done). */
  private streamBytes = 0;
  /** post-copy: our lazy page server's port and the destination's address it admits. */
  private lazyPort: { port: number; peer: string | null } | null = null;
  private lazyDump: Promise<unknown> | null = null;
  private lazySession: SwrkSession | null = null;
  /** The CRIU the dump will run in, started at prepare: none of its start-up in the freeze. */
  private dumpCriu: SwrkSession | null = null;
  /** Nobody could tell the destination to drop its copy: ours stays frozen, rolled back never. */
  private inDoubt = false;

  readonly mode: Exclude<MigrationMode, 'auto'>;

  constructor(
    private readonly w: SourceWorld,
    private readonly job: JobRecord,
    private readonly req: Pick<AgentRequest<'migrate'>, 'destination' | 'ticket'>,
    private readonly how: {
      mode: Exclude<MigrationMode, 'auto'>;
      memoryBytes: number;
      /** Where the destination's agent is reached (its stream address). */
      destinationAddress: string;
    },
  ) {
    const { mode } = how;
    this.mode = mode;
    this.rec = newMigrationRecord({
      migrationId: newId('mig'),
      jobId: job.id,
      role: 'source',
      source: w.hostId,
      destination: req.destination,
      mode,
      state: MigrationState.preparing,
    });
  }

  /** All the phases, and the one rollback exit. */
  async run(): Promise<MigrationRecord> {
    activeSourceMigrations.add(this.rec.migrationId);
    try {
      await this.begin();
      try {
        await this.prepare();
        // The stream's TLS handshake and token before the freeze, not in it.
        await this.connect();
        mark(this.rec, 'stream-open', this.t0);
        await this.keptAlive(async () => {
          await this.freeze();
          await this.dump();
        });
        await this.transfer();
        await this.pull();
        await this.commit();
        await this.w.scratch.remove(this.rec.migrationId);
        this.progress('done', { stats: this.rec.stats });
        return this.rec;
      } catch (err) {
        return await this.fail(toDroverError(err));
      }
    } finally {
      activeSourceMigrations.delete(this.rec.migrationId);
      // Started for a dump that never ran.
      await this.dumpCriu?.kill();
      await this.closeLazyPort();
    }
  }

  /** The record (with the ticket kept beside it) and the job marked `migrating`. */
  private async begin(): Promise<void> {
    advance(this.rec, MigrationState.preparing, this.t0);
    // Shown to the destination with every later call about this migration (and kept for recovery).
    await this.w.records.saveTicket(this.rec.migrationId, 'source', this.req.ticket);
    await this.w.records.save(this.rec);
    this.job.state = JobState.migrating;
    await this.w.jobs.save(this.job);
    this.w.jobs.event(this.job);
  }

  /** The destination checks and readies itself; each side admits only the other to its pages port. */
  private async prepare(): Promise<void> {
    const { destination } = this.req;
    const postCopy = this.mode === 'post-copy';
    this.dumpCriu = this.w.startCriu();
    if (postCopy) this.lazyPort = { port: await this.w.pages.freePort(), peer: null };
    this.prepared = await this.w.call(destination, 'migrate-prepare', {
      migrationId: this.rec.migrationId,
      source: this.w.hostId,
      ticket: this.req.ticket,
      mode: this.mode,
      job: migratingJob(this.job),
      memoryBytes: this.how.memoryBytes,
      cpuFlags: await this.w.jobs.cpuFlags(),
      pids: this.w.jobs.pids(this.job),
      ...(postCopy
        ? { pageServer: { host: this.w.advertiseHost, port: this.lazyPort!.port } }
        : { pageFrom: await this.w.pages.localAddressToward(this.how.destinationAddress) }),
    });
    if (postCopy) {
      const peer = this.prepared.pageFrom;
      if (!peer)
        throw new DroverError(
          ErrorCode.Internal,
          `${destination} did not say where it pulls pages from`,
        );
      await this.w.pages.admit(this.lazyPort!.port, peer);
      this.lazyPort!.peer = peer;
    } else if (!this.prepared.pages) {
      throw new DroverError(ErrorCode.Internal, `${destination} offered no page server`);
    }
    advance(this.rec, MigrationState.prepared, this.t0);
    this.progress('prepared');
    const scratch = await this.w.scratch.make(this.rec.migrationId);
    this.scratch = scratch.dir;
    if (scratch.onDisk)
      this.rec.note = 'no tmpfs on this host: images passed through the state directory';
    this.plan = await this.w.images.plan(this.job);
  }

  /** Quiesce, freeze (checkpointing guard) and lock the job's network. */
  private async freeze(): Promise<void> {
    if (addressOf(this.job.network)) {
      // New connections are held off (their SYNs retransmit to wherever the job runs next) and
      // the ones in flight get a moment to be accepted, so the dump finds none to drop.
      this.held = true;
      const q = await this.w.network.quiesce(this.job, QUIESCE_MS);
      this.rec.stats.inFlightDropped = q.inFlight;
      mark(this.rec, 'quiesced', this.t0);
    }
    this.cg = await this.w.cgroup(this.job);
    this.tFreeze = performance.now();
    // The freezer and the network lock at once; both hold before the dump starts (a rollback
    // undoes whichever took: `held` is set, the guard kept as soon as it exists).
    const cg = this.cg;
    await settleAll([
      cg.freezeForCheckpoint().then((g) => {
        this.guard = g;
        mark(this.rec, 'freezer', this.t0);
      }),
      addressOf(this.job.network) ? this.w.network.lock(this.job) : Promise.resolve(),
    ]);
    advance(this.rec, MigrationState.frozen, this.t0);
    await this.w.records.save(this.rec);
  }

  /** CRIU dumps, leaving the tree frozen by our guard until the destination runs it. */
  private async dump(): Promise<void> {
    advance(this.rec, MigrationState.dumping, this.t0);
    await this.w.records.save(this.rec);
    const base = {
      pid: this.job.rootPid!,
      imagesDir: this.scratch,
      leaveRunning: true,
      ...(this.cg!.paths.freezer ? { freezeCgroup: this.cg!.paths.freezer } : {}),
      ...dumpOptionsOf(this.plan!),
      networkLock: this.plan!.networkLock,
    };
    const input = {
      base,
      hooks: this.jobFilesHook(),
      scratch: this.scratch,
      session: this.dumpCriu,
    };
    this.dumpCriu = null;
    const tDump = performance.now();
    let pageBytes = 0;
    if (this.mode === 'post-copy') {
      await dumpLazy(this.w, input, {
        port: this.lazyPort!.port,
        onStarted: (dump) => (this.lazyDump = dump),
        onSession: (sw) => (this.lazySession = sw),
        onReady: () => mark(this.rec, 'images-ready', this.t0),
      });
    } else {
      const memoryBytes = this.how.memoryBytes;
      this.rec.stats.pages = await dumpToPageServer(this.w, input, {
        pages: this.prepared!.pages!,
        onAcked: (acked) =>
          this.progress('dumping', {
            bytes: acked,
            totalBytes: Math.max(memoryBytes, acked),
            rateBytesPerSec: Math.round((acked * 1000) / (performance.now() - tDump)),
          }),
      });
      pageBytes = this.rec.stats.pages * PAGE_SIZE;
    }
    this.rec.stats.dumpMs = Math.round(performance.now() - tDump);
    this.streamBytes = await this.w.images.bytes(this.scratch);
    this.progress('dumped', {
      dumpMs: this.rec.stats.dumpMs,
      totalBytes: this.streamBytes,
      ...(pageBytes > 0 ? { pageBytes } : {}),
    });
  }

  /**
   * The job's directory goes into the images at CRIU's post-dump, while the job is frozen and
   * before CRIU removes the link-remap files it made in the job's directories (job-image.ts).
   */
  private jobFilesHook(): { 'post-dump': () => Promise<number> } {
    return {
      'post-dump': async () => {
        mark(this.rec, 'post-dump', this.t0);
        return await this.w.images.addJobFiles(this.job, this.plan!, this.scratch);
      },
    };
  }

  /** The small images and the job's directory through the framed stream; the job runs there. */
  private async transfer(): Promise<void> {
    advance(this.rec, MigrationState.transferring, this.t0);
    await this.w.records.save(this.rec);
    const tTransfer = performance.now();
    const client = this.stream!;
    let result: { job: JobInfo; restoreMs: number };
    try {
      const sent = await client.sendDirectory(this.scratch);
      this.rec.stats.files = sent.files;
      this.rec.stats.bytes = sent.bytes;
      this.rec.stats.transferMs = Math.round(performance.now() - tTransfer);
      advance(this.rec, MigrationState.awaiting, this.t0);
      this.doneSent = true;
      result = (await client.finish()) as { job: JobInfo; restoreMs: number };
      mark(this.rec, 'result', this.t0);
    } catch (err) {
      await client.abort(toDroverError(err));
      throw err;
    } finally {
      this.stream = null;
    }
    this.rec.stats.restoreMs = result.restoreMs;
    this.rec.stats.frozenMs = Math.round(performance.now() - this.tFreeze);
  }

  /** Open the stream to the destination: TLS (its certificate must be agent <destination>), token. */
  private async connect(): Promise<void> {
    this.stream = await this.w.openStream({
      host: this.prepared!.streamHost,
      port: this.prepared!.streamPort,
      migrationId: this.rec.migrationId,
      token: this.prepared!.token,
      peer: this.req.destination,
      idleTimeoutMs: STREAM_IDLE_MS,
      onProgress: (p) =>
        this.progress('transferring', {
          bytes: p.bytes,
          totalBytes: this.streamBytes,
          rateBytesPerSec: Math.round(p.rateBytesPerSec),
        }),
    });
  }

  /** `work`, with the stream (open since before the freeze) kept alive meanwhile. */
  private async keptAlive(work: () => Promise<void>): Promise<void> {
    await this.stream!.keepAlive(work());
  }

  /** post-copy: the job runs on the destination; its memory still comes from here. */
  private async pull(): Promise<void> {
    if (!this.lazyDump) return;
    // Not a state of the record (it is still awaiting), but a phase of its timeline.
    this.rec.timeline.push({
      phase: 'pulling-pages',
      atMs: Math.round(performance.now() - this.t0),
    });
    this.progress('pulling-pages');
    try {
      await pagesPulled(this.w, this.lazyDump, {
        peer: this.lazyPort!.peer!,
        localPort: this.lazyPort!.port,
      });
    } catch (err) {
      const first = toDroverError(err);
      // The pages did not all arrive: the destination's copy is broken; ours is intact. Ours
      // runs again only once the destination has dropped its copy: the job never runs twice.
      try {
        await this.abortDestination(10_000);
      } catch (e) {
        this.inDoubt = true;
        advance(this.rec, MigrationState.inDoubt, this.t0);
        this.rec.error = errorToFailure(first);
        this.rec.note =
          'the pages stopped and the destination could not be told to drop its copy; the original stays frozen';
        await this.w.records.save(this.rec);
        throw first.suppress(e);
      }
      this.doneSent = false;
      throw first;
    }
    const stats = await this.w.images.stats(this.scratch).catch(() => null);
    this.rec.stats.pages = stats?.pagesLazy ?? this.rec.stats.pages;
  }

  /** The destination runs the job: discard the frozen original and finish the record. */
  private async commit(): Promise<void> {
    advance(this.rec, MigrationState.committing, this.t0);
    await this.w.records.save(this.rec);
    this.w.jobs.release(this.job.id);
    await this.w.network.release(this.job);
    this.held = false;
    await this.guard?.release({ thaw: false });
    this.guard = null;
    // Kills what is left of the original (thawing first where a v1 freezer needs it to die).
    await (this.cg ?? (await this.w.cgroup(this.job))).destroy({ force: true });
    this.job.state = JobState.migrated;
    this.job.note = `moved to ${this.rec.destination} by ${this.rec.migrationId}`;
    this.job.rootPid = null;
    this.job.mainPid = null;
    this.job.rootStartTicks = null;
    await this.w.jobs.save(this.job);
    this.w.jobs.event(this.job);
    await this.w
      .call(
        this.rec.destination,
        'migrate-commit',
        {
          migrationId: this.rec.migrationId,
          ticket: await this.w.records.ticket(this.rec.migrationId),
        },
        5000,
      )
      .catch((err: unknown) =>
        this.w.log.warn('destination missed the commit; it finishes on its own', {
          err,
          migrationId: this.rec.migrationId,
        }),
      );
    this.rec.stats.totalMs = Math.round(performance.now() - this.t0);
    advance(this.rec, MigrationState.done, this.t0);
    await this.w.records.save(this.rec);
    this.w.log.info('migrated', {
      jobId: this.job.id,
      to: this.rec.destination,
      stats: this.rec.stats,
    });
  }

  /** The one rollback exit: settle with the destination if it may run the job, else thaw here. */
  private async fail(first: DroverError): Promise<MigrationRecord> {
    if (this.lazySession) await this.killLazyDump(this.lazySession);
    // A stream opened ahead of the freeze and not used yet: the destination drops it (ERROR).
    await this.stream?.abort(first).catch((e: unknown) => first.suppress(e));
    this.stream = null;
    if (this.inDoubt) throw first;
    if (this.doneSent && !isTransferError(first, 'remote')) {
      // The destination may have restored the job: ask it before touching the original.
      const outcome = await settleWithDestination(this.w.call, this.rec, this.req.ticket);
      if (outcome === 'running') {
        await this.commit();
        return this.rec;
      }
      if (outcome === 'unknown') {
        advance(this.rec, MigrationState.inDoubt, this.t0);
        this.rec.error = errorToFailure(first);
        this.rec.note =
          'the destination could not be asked whether it runs the job; the original stays frozen';
        await this.w.records.save(this.rec);
        throw first.suppress(new Error(this.rec.note));
      }
    } else {
      // An unreachable destination cannot have restored anything before DONE: safe to go on.
      await this.abortDestination(5000).catch((e: unknown) => first.suppress(e));
    }
    await this.rollBack(first);
    await this.w.scratch.remove(this.rec.migrationId).catch(() => undefined);
    throw first;
  }

  /** Thaw the original where it was, its network open again, and record why. */
  private async rollBack(first: DroverError): Promise<void> {
    try {
      if (this.held) await this.w.network.reopen(this.job);
    } catch (e) {
      first.suppress(e);
    }
    try {
      if (this.guard) await this.guard.release({ thaw: true });
    } catch (e) {
      first.suppress(e);
    }
    const job = this.job;
    job.state =
      job.rootPid !== null && isSameLiveProcess(job.rootPid, job.rootStartTicks)
        ? JobState.running
        : JobState.lost;
    if (job.state === JobState.lost)
      job.note = `lost during migration ${this.rec.migrationId}: ${first.message}`;
    await this.w.jobs.save(job).catch((e: unknown) => first.suppress(e));
    this.w.jobs.event(job);
    this.rec.error = errorToFailure(first);
    advance(this.rec, MigrationState.rolledBack, this.t0);
    await this.w.records.save(this.rec).catch((e: unknown) => first.suppress(e));
    this.w.log.warn('migration rolled back; the job runs here as before', {
      jobId: job.id,
      err: first,
    });
  }

  private abortDestination(timeoutMs: number): Promise<unknown> {
    return this.w.call(
      this.req.destination,
      'migrate-abort',
      { migrationId: this.rec.migrationId, ticket: this.req.ticket },
      timeoutMs,
    );
  }

  /** Stop a lazy dump still serving pages (its swrk), so the frozen original can be thawed. */
  private async killLazyDump(session: SwrkSession): Promise<void> {
    this.w.log.warn('stopping the lazy dump of a failed migration', {
      migrationId: this.rec.migrationId,
      pid: session.pid,
    });
    // CRIU's tracer dies; the tree, still held by our freezer, is released as it was.
    await session.kill();
  }

  private async closeLazyPort(): Promise<void> {
    if (this.lazyPort?.peer) {
      await this.w.pages.close(this.lazyPort.port, this.lazyPort.peer).catch(() => undefined);
    }
  }

  private progress(
    phase: MigrationProgressEvent['phase'],
    extra: Partial<MigrationProgressEvent> = {},
  ): void {
    this.w.progress({
      migrationId: this.rec.migrationId,
      jobId: this.job.id,
      destination: this.req.destination,
      phase,
      ...extra,
    });
  }
}

/** The job as the destination's `migrate-prepare` receives it. */
function migratingJob(j: JobRecord): AgentRequest<'migrate-prepare'>['job'] {
  const a = addressOf(j.network);
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
    ...(a
      ? {
          address: {
            address: a.address,
            prefixLength: a.prefixLength,
            ...(a.gateway !== null ? { gateway: a.gateway } : {}),
          },
        }
      : {}),
    ...(Object.keys(j.checkpointOptions ?? {}).length
      ? { checkpointOptions: j.checkpointOptions }
      : {}),
    ...(j.until && j.until !== 'main' ? { until: j.until } : {}),
    ...(j.mainPidfile ? { mainPidfile: j.mainPidfile } : {}),
    ...(j.tty ? { tty: true } : {}),
  } as unknown as AgentRequest<'migrate-prepare'>['job'];
}
