/**
 * The agent: the jobs of one host behind one object. It holds what every operation shares (the
 * job and image stores, CRIU, the per-job locks, supervision, the named-jobs table) and serves
 * the agent API, one method per request; the operations that are more than a few lines live in
 * their own modules, each taking only what it uses of the agent: `job-run.ts` (run),
 * `job-freeze.ts` (freeze, thaw, a cluster's cut), `adopt.ts`, `checkpoint.ts` (checkpoint,
 * restore, discard), `supervisor.ts` (root exits, self-checkpoint sockets, re-attaching after a
 * restart), `migration/` (moves).
 */
import { JobCgroup } from '@drover/cgroup';
import {
  DroverError,
  ErrorCode,
  newId,
  nullLogger,
  toDroverError,
  type Logger,
} from '@drover/common';
import {
  Criu,
  findCriu,
  type SwrkSession,
  type WarmSwrk,
  probeAbilities,
  type CriuAbilities,
  type CriuFeatures,
} from '@drover/criu';
import {
  pageOf,
  parseSignal,
  type AgentReplies,
  type AgentRequest,
  type JobInfo,
} from '@drover/protocol';
import { existsSync } from 'node:fs';
import type { AgentConfig } from './config.js';
import { checkpointJob, checkpointMany, discardJob, DumpRuns, restoreImage } from './checkpoint.js';
import { buildAgentInfo, checkFiles } from './host-facts.js';
import { ImageStore } from './image-store.js';
import { JobStore, LIVE_STATES, toJobInfo, type JobRecord } from './job-store.js';
import { JobLocks } from './job-locks.js';
import { PreparedDumps, prepareDumps } from './prepared-dumps.js';
import { refreshMain, resolveMain, signalTargets } from './job-main.js';
import { planJobDump } from './job-image.js';
import { LogIndex, readJobLog } from './job-logs.js';
import { runJob } from './job-run.js';
import { CUT_LATE_MS, freezeJob, freezeJobs, thawJob, thawJobs } from './job-freeze.js';
import { addressOf, initQuiesce } from './job-network.js';
import { updateHostsFile, type NameEntry } from './job-hosts.js';
import { initPageChannel } from './migration/page-channel.js';
import { mountScratch, type ScratchMount } from './migration/scratch.js';
import { isSameLiveProcess, processTree, setChildSubreaper } from '@drover/native';
import { adoptTree } from './adopt.js';
import { writeTtyInput } from './job-tty.js';
import { Supervisor } from './supervisor.js';

/** Injected dependencies (tests may swap the clock or logger). */
export interface AgentDeps {
  logger?: Logger;
  /** Publishes job events (the daemon wires this to NATS). */
  publishEvent?: (kind: string, value: unknown) => void;
}

/** One agent: the jobs of one host. */
export class Agent {
  readonly log: Logger;
  readonly store: JobStore;
  readonly images: ImageStore;
  readonly supervisor: Supervisor;
  /** Log sizes over time, for `logs --since` (the daemon samples it each second). */
  readonly logIndex: LogIndex;
  criu!: Criu;
  /** `criu swrk` processes started before a cluster's cut for its dumps (checkpoint.ts). */
  warmDumps: WarmSwrk<SwrkSession> | null = null;
  criuVersion = 'unknown';
  features: CriuFeatures = { lazyPages: false, memTrack: false, pidfdStore: false };
  /** What `criu check` says this host can do; null until probed (a few seconds after start). */
  abilities: CriuAbilities | null = null;
  private readonly locks = new JobLocks();
  /** The `checkpoint-many` requests under way (checkpoint.ts). */
  readonly dumpRuns = new DumpRuns();
  /** Dumps readied before a cluster's cut (prepared-dumps.ts). */
  readonly preparedDumps = new PreparedDumps((imageId) => this.images.remove(imageId));
  readonly startedAt = Date.now();
  /** Where peers reach this agent's migration stream (set by the daemon once it listens). */
  stream: { host: string; port: number } = { host: '', port: 0 };
  private readonly publishEvent: (kind: string, value: unknown) => void;
  /** The cluster's named jobs (the controller's last `names-set`): every job's /etc/hosts. */
  private names: NameEntry[] = [];

  constructor(
    readonly config: AgentConfig,
    deps: AgentDeps = {},
  ) {
    this.log = (deps.logger ?? nullLogger).child({ component: 'agent', host: config.hostId });
    this.store = new JobStore(config.stateDir);
    this.images = new ImageStore(config.stateDir);
    this.supervisor = new Supervisor(this);
    this.logIndex = new LogIndex(this.store.jobsDir);
    this.publishEvent = deps.publishEvent ?? (() => {});
  }

  /** Find CRIU, become a child subreaper, and re-attach to every job left running. */
  async start(): Promise<void> {
    const bin = this.config.criuPath
      ? { path: this.config.criuPath, version: 'configured' }
      : await findCriu({ pathEnv: process.env.PATH ?? '' });
    this.criu = new Criu({ criuPath: bin.path, logger: this.log });
    this.warmDumps = this.criu.warm();
    this.criuVersion = (await this.criu.version()).text;
    this.features = await this.criu.features();
    // In the background: ~40 `criu check --feature` runs; heartbeats carry them once known.
    void probeAbilities(bin.path).then(
      (a) => (this.abilities = a),
      (err: unknown) => this.log.warn('cannot probe CRIU abilities', { err }),
    );
    // Orphans of restored trees come to us, so their exit status can be reaped and recorded.
    setChildSubreaper(true);
    await this.store.init();
    if (existsSync(`/sys/class/net/${this.config.jobBridge}/bridge`)) await initQuiesce(this.log);
    await initPageChannel(this.log);
    // Images a previous run of the agent left unsealed (it died first) are unfinished: they go,
    // with their plaintext in tmpfs. Their jobs ran on (only leave-running images are sealed late).
    await this.images.sweepUnfinished(this.config.hostId, this.config.stateDir, this.log);
    // Images in flight go to a tmpfs of their own, with large folios (scratch.ts).
    const scratch = await mountScratch().catch((err: unknown): ScratchMount => ({
      state: 'directory',
      path: null,
      reason: String(err),
    }));
    if (scratch.state === 'directory') this.log.warn('scratch on a plain directory', scratch);
    else this.log.info('scratch tmpfs', scratch);
    await this.supervisor.reattach();
  }

  /** Stop watching (jobs keep running: an agent restart never stops a job). */
  async stop(): Promise<void> {
    await this.warmDumps?.drain();
    await this.preparedDumps.drain();
    await this.supervisor.close();
  }

  /** Serialize operations on one job (job-locks.ts). */
  withJob<T>(jobId: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.withJob(jobId, fn);
  }

  /** {@link withJob} over several jobs at once (job-locks.ts). */
  withJobs<T>(jobIds: readonly string[], fn: () => Promise<T>): Promise<T> {
    return this.locks.withJobs(jobIds, fn);
  }

  async info(): Promise<AgentReplies['info']> {
    const jobs = await this.store.list();
    return buildAgentInfo(this, jobs);
  }

  run(req: AgentRequest<'run'>): Promise<JobInfo> {
    const id = req.jobId ?? newId('job');
    return this.withJob(id, () => runJob(this, id, req));
  }

  /** Take an existing process subtree as a job (see adopt.ts). */
  adopt(req: AgentRequest<'adopt'>): Promise<JobInfo> {
    return adoptTree(this, req);
  }

  /** Jobs by id, a page at a time (a host may have more than one reply can carry). */
  async list(req: AgentRequest<'list'> = {}): Promise<AgentReplies['list']> {
    const all = (await this.store.list()).sort((a, b) => cmp(a.id, b.id));
    const p = pageOf(all, (r) => r.id, { after: req.after, limit: req.limit });
    // A main process handed over (a pidfile) or gone (--until all) shows as it is now.
    for (const r of p.items)
      if (LIVE_STATES.includes(r.state)) Object.assign(r, await resolveMain(r));
    return { jobs: p.items.map(toJobInfo), next: p.next };
  }

  async inspect(req: AgentRequest<'inspect'>): Promise<AgentReplies['inspect']> {
    const r = await this.store.load(req.jobId);
    const live =
      r.rootPid !== null &&
      LIVE_STATES.includes(r.state) &&
      isSameLiveProcess(r.rootPid, r.rootStartTicks);
    const processes = live
      ? processTree(r.rootPid!).map((p) => ({
          pid: p.pid,
          nspid: p.nspid,
          state: p.state,
          cmdline: p.cmdline,
        }))
      : [];
    let memoryUsageBytes: number | null = null;
    let effectiveCheckpointOptions = null;
    if (live) {
      Object.assign(r, await resolveMain(r));
      memoryUsageBytes = await this.cgroupOf(r)
        .then((cg) => cg.memoryUsage())
        .catch(() => null);
      effectiveCheckpointOptions = await planJobDump(r, this.config.checkpointOptions).then(
        (p) => p.criu,
        () => null,
      );
    }
    return { ...toJobInfo(r), processes, memoryUsageBytes, effectiveCheckpointOptions };
  }

  async signal(req: AgentRequest<'signal'>): Promise<JobInfo> {
    return this.withJob(req.jobId, async () => {
      const r = await this.liveJob(req.jobId);
      if (await refreshMain(r)) await this.store.save(r);
      // SIGKILL ends the whole job (its namespace init); other signals go to its main process,
      // or, once that is gone (--until all), to every process of it (job-main.ts). By number:
      // Node knows no names for the real-time signals.
      const sig = parseSignal(req.signal);
      const targets = sig.name === 'SIGKILL' ? [r.rootPid!] : signalTargets(r);
      let sent = 0;
      for (const pid of targets) {
        try {
          process.kill(pid, sig.number);
          sent++;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
        }
      }
      if (sent === 0) {
        throw new DroverError(
          ErrorCode.FailedPrecondition,
          `job ${r.id} has no process left to signal (it is ending)`,
          { details: { jobId: r.id, signal: sig.name } },
        );
      }
      return toJobInfo(r);
    });
  }

  /** Input for a job's terminal: written to the FIFO its terminal reads (job-tty.ts). */
  async ttyWrite(req: AgentRequest<'tty-write'>): Promise<AgentReplies['tty-write']> {
    const r = await this.liveJob(req.jobId);
    return { bytes: await writeTtyInput(r, req.data) };
  }

  async logs(req: AgentRequest<'logs'>): Promise<AgentReplies['logs']> {
    const r = await this.store.load(req.jobId);
    // The path comes from the job's id, never from the record (which lives in the job's
    // directory), and the file is read without following a symlink the job may have planted.
    const { jobId, ...range } = req;
    const chunk = await readJobLog(this.store.jobDir(jobId), jobId, range, this.logIndex);
    return { ...chunk, state: r.state };
  }

  freeze(req: AgentRequest<'freeze'>): Promise<AgentReplies['freeze']> {
    return this.withJob(req.jobId, () => freezeJob(this, req.jobId));
  }

  /**
   * A cluster checkpoint's barrier on this host: several jobs frozen as one cut, at an instant
   * when the request names one (job-freeze.ts).
   */
  freezeMany(req: AgentRequest<'freeze-many'>): Promise<AgentReplies['freeze-many']> {
    const ids = [...new Set(req.jobIds)];
    const at =
      req.atMs === undefined ? undefined : { atMs: req.atMs, lateMs: req.lateMs ?? CUT_LATE_MS };
    // A cut that failed ends its warm CRIUs; a missed one is planned again and will want them.
    return this.withJobs(ids, () => freezeJobs(this, ids, at)).catch(async (err: unknown) => {
      if (toDroverError(err).code !== ErrorCode.CutMissed) {
        await this.warmDumps?.drain();
        await this.preparedDumps.drain();
      }
      throw err;
    });
  }

  /**
   * Before a cluster's cut: the CRIU processes of its dumps here started now (each a fork of the
   * agent, an exec and CRIU's start-up, 30-100 ms on a busy host), so that a dump in the cut is one
   * request to a process already running. Not in `freeze-many`: the spawns would hold the event
   * loop past the cut's instant. Those left over go at the thaw, on a failed cut, or after a
   * minute unused (warm-swrk.ts).
   */
  criuWarm(req: AgentRequest<'criu-warm'>): Promise<AgentReplies['criu-warm']> {
    const started = this.warmDumps?.fill(req.count) ?? 0;
    return Promise.resolve({ started, waiting: this.warmDumps?.size ?? 0 });
  }

  /** Before a cluster's cut: its dumps here readied while the jobs run (prepared-dumps.ts). */
  dumpsPrepare(req: AgentRequest<'dumps-prepare'>): Promise<AgentReplies['dumps-prepare']> {
    return prepareDumps(this, req);
  }

  thaw(req: AgentRequest<'thaw'>): Promise<JobInfo> {
    return this.withJob(req.jobId, () => thawJob(this, req.jobId));
  }

  /** The end of a cluster checkpoint's cut on this host: its jobs thawed together (job-freeze.ts). */
  thawMany(req: AgentRequest<'thaw-many'>): Promise<AgentReplies['thaw-many']> {
    const ids = [...new Set(req.jobIds)];
    return this.withJobs(ids, () => thawJobs(this, ids)).finally(() => {
      void this.warmDumps?.drain();
      void this.preparedDumps.drain();
    });
  }

  /** `dumped`: told once CRIU has made the job's dump (checkpoint.ts, `checkpointMany`). */
  checkpoint(
    req: AgentRequest<'checkpoint'>,
    dumped?: () => void,
  ): Promise<AgentReplies['checkpoint']> {
    return this.withJob(req.jobId, () => checkpointJob(this, req, dumped));
  }

  /**
   * A cluster checkpoint's dumps here, after its cut (checkpoint.ts): one request for the host's
   * share, so that no dump waits for the controller's next call.
   */
  checkpointMany(req: AgentRequest<'checkpoint-many'>): Promise<AgentReplies['checkpoint-many']> {
    return checkpointMany(this, req, (r, dumped) => this.checkpoint(r, dumped));
  }

  /** No new dump of run `runId`'s `checkpoint-many` requests starts (their running ones end). */
  checkpointStop(req: AgentRequest<'checkpoint-stop'>): Promise<AgentReplies['checkpoint-stop']> {
    return Promise.resolve({ stopped: this.dumpRuns.stop(req.runId) });
  }

  async restore(req: AgentRequest<'restore'>): Promise<JobInfo> {
    const manifest = await this.images.readManifest(req.imageId);
    return this.withJob(manifest.jobId, () =>
      restoreImage(this, manifest, req.leaveFrozen === true, req.key),
    );
  }

  discard(req: AgentRequest<'discard'>): Promise<JobInfo> {
    return this.withJob(req.jobId, () => discardJob(this, req));
  }

  async remove(req: AgentRequest<'remove'>): Promise<AgentReplies['remove']> {
    return this.withJob(req.jobId, async () => {
      const r = await this.store.load(req.jobId);
      if (LIVE_STATES.includes(r.state)) {
        throw new DroverError(
          ErrorCode.FailedPrecondition,
          `job ${r.id} is ${r.state}; stop it first`,
          {
            details: { jobId: r.id, state: r.state },
          },
        );
      }
      await JobCgroup.open({ jobId: r.id, parent: this.config.cgroupParent })
        .then((cg) => cg.destroy({ force: true }))
        .catch(() => undefined);
      await this.store.remove(r.id);
      return { removed: true };
    });
  }

  /**
   * The controller's table of named jobs: kept for jobs started later, and written into the
   * /etc/hosts of every job here that has its own address.
   */
  async setNames(req: AgentRequest<'names-set'>): Promise<AgentReplies['names-set']> {
    this.names = req.names.map((n) => ({ name: n.name, address: n.address }));
    let jobs = 0;
    for (const r of await this.store.list()) {
      const address = addressOf(r.network);
      if (!address || !LIVE_STATES.includes(r.state)) continue;
      await this.withJob(r.id, () => updateHostsFile(r, address.address, this.names)).then(
        () => jobs++,
        (err: unknown) => this.log.warn("cannot update a job's hosts file", { jobId: r.id, err }),
      );
    }
    return { jobs };
  }

  /** The current table of named jobs (for a restored job's /etc/hosts). */
  namedJobs(): readonly NameEntry[] {
    return this.names;
  }

  filesCheck(req: AgentRequest<'files-check'>): Promise<AgentReplies['files-check']> {
    return checkFiles(req, this.config.stateDir);
  }

  // ---- what the operation modules use (adopt.ts, checkpoint.ts, job-run.ts, migration/) ----

  /** A job whose processes exist here, checked by PID and start time. */
  liveJob(jobId: string): Promise<JobRecord> {
    return this.store.loadLive(jobId);
  }

  cgroupOf(r: JobRecord): Promise<JobCgroup> {
    return JobCgroup.open({
      jobId: r.id,
      parent: this.config.cgroupParent,
      stateDir: r.jobDir,
      logger: this.log,
    });
  }

  /** Publish an event of `kind` (job, migration) on this host's event subject. */
  publish(kind: string, value: unknown): void {
    this.publishEvent(kind, value);
  }

  /** Publish a job's state as an event. */
  event(r: JobRecord): void {
    this.publishEvent('job', {
      jobId: r.id,
      host: r.host,
      state: r.state,
      exitCode: r.exitCode,
      signal: r.signal,
      at: new Date().toISOString(),
    });
  }
}

/** Plain string order (the order of page cursors). */
function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
