/**
 * Supervision of the jobs on this host: each job's root watched through a pidfd and its exit
 * recorded; its self-checkpoint socket served while it lives; after an agent restart, every live
 * job watched again and the ones that ended meanwhile recorded.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:os';
import type { JobCgroup } from '@drover/cgroup';
import type { Logger } from '@drover/common';
import {
  closeFd,
  isSameLiveProcess,
  pidfdOpen,
  waitForExit,
  type ChildStatus,
} from '@drover/native';
import { JobKind, JobState, type AgentReplies, type AgentRequest } from '@drover/protocol';
import { refreshMain } from './job-main.js';
import { addressOf, unlockJobNetwork, unquiesceJob } from './job-network.js';
import { LIVE_STATES, type JobRecord, type JobStore } from './job-store.js';
import { SelfCheckpointServer } from './self-checkpoint.js';

/** What supervision uses of the agent. */
export interface SupervisedHost {
  readonly log: Logger;
  readonly store: JobStore;
  withJob<T>(jobId: string, fn: () => Promise<T>): Promise<T>;
  cgroupOf(r: JobRecord): Promise<JobCgroup>;
  /** Publish a job's state as an event. */
  event(r: JobRecord): void;
  /** Checkpoint a job (its self-checkpoint socket asks for this). */
  checkpoint(req: AgentRequest<'checkpoint'>): Promise<AgentReplies['checkpoint']>;
}

/** Watches, exit records and self-checkpoint sockets of the jobs on this host. */
export class Supervisor {
  private readonly roots: RootWatches;
  private readonly selfCheckpoint = new Map<string, SelfCheckpointServer>();
  /** Self-checkpoint sockets being opened (`close` waits for them). */
  private readonly opening = new Set<Promise<void>>();

  constructor(private readonly host: SupervisedHost) {
    this.roots = new RootWatches(host.log);
  }

  /** Supervise a live record's root. */
  watch(r: JobRecord): void {
    if (r.rootPid === null) return;
    this.roots.watch(r.id, r.rootPid, (status) => void this.onRootExit(r.id, status));
    const opening = this.openSelfCheckpoint(r);
    this.opening.add(opening);
    void opening.finally(() => this.opening.delete(opening));
  }

  /** Stop supervising a job whose processes are gone on purpose (checkpointed, migrated). */
  release(jobId: string): void {
    this.roots.unwatch(jobId);
    // Not awaited: closing waits for a self-checkpoint in progress, which may itself be queued
    // behind the caller's job lock.
    void this.closeSelfCheckpoint(jobId);
  }

  /** Stop watching (jobs keep running: an agent restart never stops a job). */
  async close(): Promise<void> {
    this.roots.close();
    // A socket still being opened is closed with the others, not left listening.
    await Promise.all(this.opening);
    await Promise.all([...this.selfCheckpoint.keys()].map((id) => this.closeSelfCheckpoint(id)));
  }

  /**
   * A job's root exited: record how, unless an operation already accounted for it. For a caller
   * that already holds the job's lock (the root exit itself takes it).
   */
  async recordExit(jobId: string, status: ChildStatus): Promise<void> {
    const { store, log } = this.host;
    const r = await store.load(jobId).catch(() => null);
    if (
      !r ||
      (r.state !== JobState.running && r.state !== JobState.frozen && r.state !== JobState.starting)
    )
      return;
    if (r.rootPid !== null && isSameLiveProcess(r.rootPid, r.rootStartTicks)) return; // stale report
    const code = await store.exitStatus(jobId);
    applyExit(r, code, status);
    await store.save(r);
    // The history shows how it ended (`drover events`).
    this.host.event(r);
    void this.closeSelfCheckpoint(jobId); // not awaited: see release()
    await this.host
      .cgroupOf(r)
      .then((cg) => cg.destroy({ force: true }))
      .catch(() => undefined);
    log.info('job exited', { jobId, exitCode: r.exitCode, signal: r.signal });
  }

  /** After a restart: watch live jobs again; record the ones that ended while we were away. */
  async reattach(): Promise<void> {
    const { store, log } = this.host;
    const records = await store.list((id, err) => log.warn('unreadable job record', { id, err }));
    for (const r of records) {
      if (!LIVE_STATES.includes(r.state)) continue;
      const alive = r.rootPid !== null && isSameLiveProcess(r.rootPid, r.rootStartTicks);
      if (r.state === JobState.checkpointing && alive) {
        // We died mid-checkpoint: roll back (the checkpoint never reported success).
        const cg = await this.host.cgroupOf(r).catch(() => null);
        await cg?.forceClearGuard();
        await cg?.thaw().catch(() => undefined);
        r.state = JobState.running;
        r.note = 'agent restarted during a checkpoint; the checkpoint was abandoned';
        await store.save(r);
      }
      if (r.state === JobState.frozen && alive) {
        // Frozen by a cluster's cut, maybe dumped when we died (its state stays `frozen` then):
        // it stays frozen for the checkpoint's thaw, which a guard left by us would refuse.
        const cg = await this.host.cgroupOf(r).catch(() => null);
        await cg?.forceClearGuard();
      }
      if (alive && addressOf(r.network) && r.state === JobState.running) {
        // A move or a cut that we died in the middle of may have left its link locked.
        await unquiesceJob(r.id);
        await unlockJobNetwork(r.id).catch((err: unknown) =>
          log.warn("cannot unlock a job's network", { jobId: r.id, err }),
        );
      }
      if (alive) {
        await refreshMain(r);
        await store.save(r);
        this.watch(r);
        log.info('re-attached to job', { jobId: r.id, rootPid: r.rootPid });
        continue;
      }
      const code = await store.exitStatus(r.id);
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
      await store.save(r);
      this.host.event(r);
    }
  }

  private onRootExit(jobId: string, status: ChildStatus): Promise<void> {
    return this.host.withJob(jobId, () => this.recordExit(jobId, status));
  }

  /** Serve `<jobDir>/drover.sock`: a process in the job may ask for its own checkpoint. */
  private async openSelfCheckpoint(r: JobRecord): Promise<void> {
    if (this.selfCheckpoint.has(r.id)) return;
    try {
      const server = await SelfCheckpointServer.listen({
        jobId: r.id,
        jobDir: r.jobDir,
        logger: this.host.log,
        // Nobody else holds a key for a job's own checkpoint: the job gets it with the image.
        checkpoint: async () => {
          const key = randomBytes(32).toString('base64');
          return {
            ...(await this.host.checkpoint({ jobId: r.id, leaveRunning: true, key })),
            key,
          };
        },
      });
      this.selfCheckpoint.set(r.id, server);
    } catch (err) {
      this.host.log.warn('cannot serve self-checkpoint socket', { jobId: r.id, err });
    }
  }

  private async closeSelfCheckpoint(jobId: string): Promise<void> {
    const s = this.selfCheckpoint.get(jobId);
    if (!s) return;
    this.selfCheckpoint.delete(jobId);
    await s
      .close()
      .catch((err: unknown) =>
        this.host.log.warn('closing self-checkpoint socket', { jobId, err }),
      );
  }
}

/** Called once when a watched root exits (status unknown when it was not our child). */
type ExitHandler = (status: ChildStatus) => void;

/** pidfd watches by job id. */
class RootWatches {
  private readonly watches = new Map<string, number>();

  constructor(private readonly log: Logger) {}

  /** Watch `pid` for job `jobId`; a root that is already gone reports at once. */
  watch(jobId: string, pid: number, onExit: ExitHandler): void {
    this.unwatch(jobId);
    let pidfd: number;
    try {
      pidfd = pidfdOpen(pid);
    } catch (err) {
      this.log.warn('root already gone when watched', { jobId, pid, err });
      queueMicrotask(() => onExit({ pid, exitCode: null, signal: null, coreDumped: false }));
      return;
    }
    this.watches.set(jobId, pidfd);
    waitForExit(pidfd).then(
      (status) => {
        if (this.watches.get(jobId) !== pidfd) return; // unwatched or replaced meanwhile
        this.watches.delete(jobId);
        closeFd(pidfd);
        onExit(status);
      },
      (err: unknown) => {
        this.log.error('waiting for job root failed', { jobId, pid, err });
        if (this.watches.get(jobId) === pidfd) {
          this.watches.delete(jobId);
          closeFd(pidfd);
        }
      },
    );
  }

  /** Stop watching `jobId` (its exit will not be reported). */
  unwatch(jobId: string): void {
    const fd = this.watches.get(jobId);
    if (fd === undefined) return;
    this.watches.delete(jobId);
    closeFd(fd);
  }

  /** Stop every watch. */
  close(): void {
    for (const id of [...this.watches.keys()]) this.unwatch(id);
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

function signalName(n: number): string | null {
  for (const [name, num] of Object.entries(constants.signals)) if (num === n) return name;
  return null;
}
