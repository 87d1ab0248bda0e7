/**
 * The agent: owns the jobs on its host. Runs, adopts, supervises, freezes, checkpoints and
 * restores them; persists their state; re-attaches after a restart; serves its NATS API.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { stat, statfs } from 'node:fs/promises';
import { constants } from 'node:os';
import { join } from 'node:path';
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
  probeAbilities,
  type CriuAbilities,
  type CriuFeatures,
} from '@drover/criu';
import {
  JobKind,
  JobState,
  pageOf,
  parseSignal,
  type AgentReplies,
  type AgentRequest,
  type JobInfo,
} from '@drover/protocol';
import type { AgentConfig } from './config.js';
import { checkpointJob, discardJob, restoreImage } from './checkpoint.js';
import { buildAgentInfo } from './host-facts.js';
import { ImageStore } from './image-store.js';
import { JobFiles, JobStore, toJobInfo, type JobRecord } from './job-store.js';
import { startNamespacedJob } from './job-runtime.js';
import { refreshMain, resolveMain, signalTargets } from './job-main.js';
import { planJobDump } from './job-image.js';
import { LogIndex, readJobLog } from './job-logs.js';
import { confirmStart } from './job-start.js';
import {
  addressOf,
  attachJob,
  checkJobBridge,
  initQuiesce,
  jobNetworkFor,
  lockJobNetwork,
  probeAddress,
  unlockJobNetwork,
  unquiesceJob,
} from './job-network.js';
import { createHostsFile, updateHostsFile, type NameEntry } from './job-hosts.js';
import { initPageChannel } from './migration/page-channel.js';
import {
  isSameLiveProcess,
  processTree,
  setChildSubreaper,
  type ChildStatus,
} from '@drover/native';
import { adoptTree } from './adopt.js';
import { SelfCheckpointServer } from './self-checkpoint.js';
import { writeTtyInput } from './job-tty.js';
import { Supervisor } from './supervisor.js';

/** States in which a job's processes exist on this host. */
export const LIVE_STATES: readonly JobState[] = [
  JobState.starting,
  JobState.running,
  JobState.frozen,
  JobState.checkpointing,
  JobState.migrating,
];

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
  criuVersion = 'unknown';
  features: CriuFeatures = { lazyPages: false, memTrack: false, pidfdStore: false };
  /** What `criu check` says this host can do; null until probed (a few seconds after start). */
  abilities: CriuAbilities | null = null;
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly selfCheckpoint = new Map<string, SelfCheckpointServer>();
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
    this.supervisor = new Supervisor(this.log);
    this.logIndex = new LogIndex(this.store.jobsDir);
    this.publishEvent = deps.publishEvent ?? (() => {});
  }

  /** Find CRIU, become a child subreaper, and re-attach to every job left running. */
  async start(): Promise<void> {
    const bin = this.config.criuPath
      ? { path: this.config.criuPath, version: 'configured' }
      : await findCriu({ pathEnv: process.env.PATH ?? '' });
    this.criu = new Criu({ criuPath: bin.path, logger: this.log });
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
    await this.reattach();
  }

  /** Stop watching (jobs keep running: an agent restart never stops a job). */
  async stop(): Promise<void> {
    this.supervisor.close();
    await Promise.all([...this.selfCheckpoint.keys()].map((id) => this.closeSelfCheckpoint(id)));
  }

  /** Serialize operations on one job. */
  withJob<T>(jobId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(jobId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.locks.set(jobId, tail);
    void tail.then(() => {
      if (this.locks.get(jobId) === tail) this.locks.delete(jobId);
    });
    return next;
  }

  /**
   * {@link withJob} over several jobs at once, taken in sorted order (why: two callers each holding
   * a job the other waits for would wait forever).
   */
  withJobs<T>(jobIds: readonly string[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(jobIds)].sort();
    const take = (i: number): Promise<T> =>
      i === sorted.length ? fn() : this.withJob(sorted[i]!, () => take(i + 1));
    return take(0);
  }

  async info(): Promise<AgentReplies['info']> {
    const jobs = await this.store.list();
    return buildAgentInfo(this, jobs);
  }

  async run(req: AgentRequest<'run'>): Promise<JobInfo> {
    const id = req.jobId ?? newId('job');
    return this.withJob(id, async () => {
      if (await this.exists(id)) {
        throw new DroverError(ErrorCode.AlreadyExists, `job ${id} already exists`, {
          details: { jobId: id },
        });
      }
      const cwd = req.cwd ?? '/';
      await assertDirectory(cwd);
      const network = jobNetworkFor(req.network);
      const address = addressOf(network);
      if (address) {
        // Refused before anything exists: no bridge here, or the address answers on the segment.
        checkJobBridge(this.config.hostId, this.config.jobBridge);
        await probeAddress(this.config.hostId, this.config.jobBridge, address.address);
      }
      const jobDir = await this.store.createJobDir(id);
      const env = { ...(req.env ?? {}), DROVER_JOB_ID: id, DROVER_JOB_DIR: jobDir };
      const cg = await JobCgroup.create({
        jobId: id,
        parent: this.config.cgroupParent,
        stateDir: jobDir,
        logger: this.log,
        ...(req.memoryLimitBytes !== undefined ? { memoryLimitBytes: req.memoryLimitBytes } : {}),
      });
      const record: JobRecord = {
        ...this.blankRecord(id, jobDir),
        name: req.name ?? id,
        kind: JobKind.namespaced,
        state: JobState.starting,
        command: [...req.command],
        cwd,
        env,
        hostname: req.hostname ?? id.slice(0, 63),
        memoryLimitBytes: req.memoryLimitBytes ?? null,
        network,
        checkpointOptions: req.checkpointOptions ?? {},
        until: req.until ?? 'main',
        mainPidfile: req.mainPidfile ?? null,
        tty: req.tty === true,
      };
      await this.store.save(record);
      try {
        const hostsFile = address
          ? await createHostsFile(record, address.address, this.names)
          : null;
        const started = await startNamespacedJob({
          command: req.command,
          env,
          cwd,
          hostname: record.hostname!,
          jobDir,
          cgroupProcsFiles: cg.paths.all.map((p) => join(p, 'cgroup.procs')),
          wrapper: { until: record.until, mainPidfile: record.mainPidfile, tty: record.tty },
          ...(address && hostsFile
            ? {
                attachNetwork: (initPid: number) =>
                  attachJob(id, initPid, address, this.config.jobBridge),
                hostsFile,
              }
            : {}),
        });
        started.launcher.unref();
        // `run` answers once the command's exec succeeded; a failed exec is a failed run.
        const failed = await confirmStart(this.store, id, started);
        if (failed) {
          record.exitCode = failed.exitCode;
          throw new DroverError(ErrorCode.StartFailed, `${req.command[0]}: ${failed.reason}`, {
            details: { jobId: id, exitCode: failed.exitCode, command: req.command.slice(0, 8) },
          });
        }
        record.rootPid = started.rootPid;
        record.rootStartTicks = started.rootStartTicks;
        record.mainPid = started.mainPid;
        record.mainPidInside = started.mainPidInside;
        record.mainStartTicks = started.mainStartTicks;
        record.state = JobState.running;
        await this.store.save(record);
        // Already over: record it now. (We hold the job's lock: onRootExit would wait for it.)
        if (started.rootPid === null)
          await this.recordExit(id, { pid: -1, exitCode: null, signal: null, coreDumped: false });
        else this.watch(record);
      } catch (err) {
        const first = toDroverError(err);
        record.state = JobState.exited;
        record.note = first.message;
        this.event(record);
        record.exitedAt = new Date().toISOString();
        await this.store.save(record);
        await cg.destroy({ force: true }).catch((e: unknown) => first.suppress(e));
        throw first;
      }
      this.event(record);
      return toJobInfo(await this.store.load(id));
    });
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

  async freeze(req: AgentRequest<'freeze'>): Promise<AgentReplies['freeze']> {
    return this.withJob(req.jobId, async () => {
      const r = await this.liveJob(req.jobId);
      const cg = await this.cgroupOf(r);
      await cg.freeze();
      // A cluster's cut: nothing reaches a frozen member until every member is dumped.
      if (addressOf(r.network)) {
        await lockJobNetwork(r.id).catch(async (err: unknown) => {
          await cg.thaw().catch((e: unknown) => toDroverError(err).suppress(e));
          throw err;
        });
      }
      // When the kernel reported every task frozen: a cluster checkpoint's skew is measured on it.
      const frozenAtMs = performance.timeOrigin + performance.now();
      r.state = JobState.frozen;
      await this.store.save(r);
      this.event(r);
      return { ...toJobInfo(r), frozenAtMs };
    });
  }

  /**
   * A cluster checkpoint's barrier on this host: every job of `jobIds` frozen as one cut
   * (`JobCgroup.freezeAll`: the freezes requested back to back, then waited for together), then
   * each one's network locked. All or nothing: a job that is not running refuses the call before
   * anything is frozen; if a freeze or a lock fails, every job is thawed and unlocked again.
   */
  async freezeMany(req: AgentRequest<'freeze-many'>): Promise<AgentReplies['freeze-many']> {
    const ids = [...new Set(req.jobIds)];
    return this.withJobs(ids, async () => {
      const records = await Promise.all(ids.map((id) => this.liveJob(id)));
      const cgs = await Promise.all(records.map((r) => this.cgroupOf(r)));
      // When the kernel reported each job frozen: a cluster checkpoint's skew is measured on it.
      const frozenAt = await JobCgroup.freezeAll(cgs);
      // A cluster's cut: nothing reaches a frozen member until every member is dumped.
      const networked = records.filter((r) => addressOf(r.network));
      const locks = await Promise.allSettled(networked.map((r) => lockJobNetwork(r.id)));
      const failed = locks.find((l): l is PromiseRejectedResult => l.status === 'rejected');
      if (failed) {
        const first = toDroverError(failed.reason);
        for (const [i, r] of networked.entries()) {
          if (locks[i]?.status === 'fulfilled') {
            await unlockJobNetwork(r.id).catch((e: unknown) => first.suppress(e));
          }
        }
        for (const cg of cgs) await cg.thaw().catch((e: unknown) => first.suppress(e));
        throw first;
      }
      return {
        jobs: await Promise.all(
          records.map(async (r, i) => {
            r.state = JobState.frozen;
            await this.store.save(r);
            this.event(r);
            return { ...toJobInfo(r), frozenAtMs: frozenAt[i]! };
          }),
        ),
      };
    });
  }

  async thaw(req: AgentRequest<'thaw'>): Promise<JobInfo> {
    return this.withJob(req.jobId, async () => {
      const r = await this.liveJob(req.jobId);
      if (addressOf(r.network)) await unlockJobNetwork(r.id);
      await (await this.cgroupOf(r)).thaw();
      r.state = JobState.running;
      await this.store.save(r);
      this.event(r);
      // Its images from a cluster's cut are sealed now that the cut is over.
      this.images.startFinishing(r.id);
      return toJobInfo(r);
    });
  }

  checkpoint(req: AgentRequest<'checkpoint'>): Promise<AgentReplies['checkpoint']> {
    return this.withJob(req.jobId, () => checkpointJob(this, req));
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

  async filesCheck(req: AgentRequest<'files-check'>): Promise<AgentReplies['files-check']> {
    const missing: string[] = [];
    const sizeDiffers: { path: string; expected: number; actual: number }[] = [];
    for (const f of req.files) {
      try {
        const st = await stat(f.path);
        if (f.size !== undefined && st.size !== f.size)
          sizeDiffers.push({ path: f.path, expected: f.size, actual: st.size });
      } catch {
        missing.push(f.path);
      }
    }
    if (req.space !== true) return { missing, sizeDiffers };
    const fs = await statfs(this.config.stateDir);
    return { missing, sizeDiffers, freeBytes: fs.bavail * fs.bsize };
  }

  // ---- internals shared with checkpoint.ts ----

  /** A job whose processes exist here, checked by PID and start time. */
  async liveJob(jobId: string): Promise<JobRecord> {
    const r = await this.store.load(jobId);
    if (
      !LIVE_STATES.includes(r.state) ||
      r.rootPid === null ||
      !isSameLiveProcess(r.rootPid, r.rootStartTicks)
    ) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `job ${jobId} is not running (state ${r.state})`,
        {
          details: { jobId, state: r.state },
        },
      );
    }
    return r;
  }

  cgroupOf(r: JobRecord): Promise<JobCgroup> {
    return JobCgroup.open({
      jobId: r.id,
      parent: this.config.cgroupParent,
      stateDir: r.jobDir,
      logger: this.log,
    });
  }

  /** Supervise a live record's root. */
  watch(r: JobRecord): void {
    if (r.rootPid === null) return;
    this.supervisor.watch(r.id, r.rootPid, (status) => void this.onRootExit(r.id, status));
    void this.openSelfCheckpoint(r);
  }

  /** Stop supervising a job whose processes are gone on purpose (checkpointed, migrated). */
  release(jobId: string): void {
    this.supervisor.unwatch(jobId);
    // Not awaited: closing waits for a self-checkpoint in progress, which may itself be queued
    // behind the caller's job lock.
    void this.closeSelfCheckpoint(jobId);
  }

  /** Serve `<jobDir>/drover.sock`: a process in the job may ask for its own checkpoint. */
  private async openSelfCheckpoint(r: JobRecord): Promise<void> {
    if (this.selfCheckpoint.has(r.id)) return;
    try {
      const server = await SelfCheckpointServer.listen({
        jobId: r.id,
        jobDir: r.jobDir,
        logger: this.log,
        // Nobody else holds a key for a job's own checkpoint: the job gets it with the image.
        checkpoint: async () => {
          const key = randomBytes(32).toString('base64');
          return { ...(await this.checkpoint({ jobId: r.id, leaveRunning: true, key })), key };
        },
      });
      this.selfCheckpoint.set(r.id, server);
    } catch (err) {
      this.log.warn('cannot serve self-checkpoint socket', { jobId: r.id, err });
    }
  }

  private async closeSelfCheckpoint(jobId: string): Promise<void> {
    const s = this.selfCheckpoint.get(jobId);
    if (!s) return;
    this.selfCheckpoint.delete(jobId);
    await s
      .close()
      .catch((err: unknown) => this.log.warn('closing self-checkpoint socket', { jobId, err }));
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

  blankRecord(id: string, jobDir: string): JobRecord {
    return {
      id,
      name: id,
      host: this.config.hostId,
      kind: JobKind.namespaced,
      state: JobState.starting,
      command: [],
      cwd: '/',
      rootPid: null,
      mainPid: null,
      mainPidInside: null,
      mainStartTicks: null,
      startedAt: new Date().toISOString(),
      exitedAt: null,
      exitCode: null,
      signal: null,
      memoryLimitBytes: null,
      jobDir,
      stdoutPath: join(jobDir, JobFiles.stdout),
      stderrPath: join(jobDir, JobFiles.stderr),
      restoredFrom: null,
      note: null,
      rootStartTicks: null,
      env: {},
      shellJob: false,
      hostname: null,
      network: { mode: 'host' },
      checkpointOptions: {},
      until: 'main',
      mainPidfile: null,
      tty: false,
    };
  }

  private async exists(id: string): Promise<boolean> {
    return this.store.load(id).then(
      () => true,
      () => false,
    );
  }

  /** A job's root exited: record how, unless an operation already accounted for it. */
  private onRootExit(jobId: string, status: ChildStatus): Promise<void> {
    return this.withJob(jobId, () => this.recordExit(jobId, status));
  }

  /** The body of `onRootExit`, for a caller that already holds the job's lock. */
  private async recordExit(jobId: string, status: ChildStatus): Promise<void> {
    const r = await this.store.load(jobId).catch(() => null);
    if (
      !r ||
      (r.state !== JobState.running && r.state !== JobState.frozen && r.state !== JobState.starting)
    )
      return;
    if (r.rootPid !== null && isSameLiveProcess(r.rootPid, r.rootStartTicks)) return; // stale report
    const code = await this.store.exitStatus(jobId);
    applyExit(r, code, status);
    await this.store.save(r);
    // The history shows how it ended (`drover events`).
    this.event(r);
    void this.closeSelfCheckpoint(jobId); // not awaited: see release()
    await this.cgroupOf(r)
      .then((cg) => cg.destroy({ force: true }))
      .catch(() => undefined);
    this.log.info('job exited', { jobId, exitCode: r.exitCode, signal: r.signal });
  }

  /** After a restart: watch live jobs again; record the ones that ended while we were away. */
  private async reattach(): Promise<void> {
    const records = await this.store.list((id, err) =>
      this.log.warn('unreadable job record', { id, err }),
    );
    for (const r of records) {
      if (!LIVE_STATES.includes(r.state)) continue;
      const alive = r.rootPid !== null && isSameLiveProcess(r.rootPid, r.rootStartTicks);
      if (r.state === JobState.checkpointing && alive) {
        // We died mid-checkpoint: roll back (the checkpoint never reported success).
        const cg = await this.cgroupOf(r).catch(() => null);
        await cg?.forceClearGuard();
        await cg?.thaw().catch(() => undefined);
        r.state = JobState.running;
        r.note = 'agent restarted during a checkpoint; the checkpoint was abandoned';
        await this.store.save(r);
      }
      if (alive && addressOf(r.network) && r.state === JobState.running) {
        // A move or a cut that we died in the middle of may have left its link locked.
        await unquiesceJob(r.id);
        await unlockJobNetwork(r.id).catch((err: unknown) =>
          this.log.warn("cannot unlock a job's network", { jobId: r.id, err }),
        );
      }
      if (alive) {
        await refreshMain(r);
        await this.store.save(r);
        this.watch(r);
        this.log.info('re-attached to job', { jobId: r.id, rootPid: r.rootPid });
        continue;
      }
      const code = await this.store.exitStatus(r.id);
      if (code === null && r.kind === JobKind.namespaced) {
        r.state = JobState.lost;
        r.note = 'the job ended while the agent was away and left no exit status';
        r.exitedAt = new Date().toISOString();
      } else {
        applyExit(r, code, {
          pid: r.rootPid ?? -1,
          exitCode: null,
          signal: null,
          coreDumped: false,
        });
      }
      await this.store.save(r);
      this.event(r);
    }
  }
}

/** Record an exit from the wrapper's status file (preferred) or the reaped status. */
function applyExit(r: JobRecord, fileCode: number | null, status: ChildStatus): void {
  r.state = JobState.exited;
  r.exitedAt = new Date().toISOString();
  if (fileCode !== null) {
    // The shell reports death by signal N as 128+N.
    if (fileCode > 128 && fileCode < 128 + 65) {
      r.exitCode = null;
      r.signal = signalName(fileCode - 128);
    } else {
      r.exitCode = fileCode;
      r.signal = null;
    }
  } else {
    r.exitCode = status.exitCode;
    r.signal = status.signal;
  }
}

/** Plain string order (the order of page cursors). */
function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function signalName(n: number): string | null {
  for (const [name, num] of Object.entries(constants.signals)) if (num === n) return name;
  return null;
}

async function assertDirectory(path: string): Promise<void> {
  try {
    if ((await stat(path)).isDirectory()) return;
  } catch {
    // fall through
  }
  throw new DroverError(ErrorCode.InvalidArgument, `working directory ${path} does not exist`, {
    details: { cwd: path },
  });
}
