/**
 * Test support: a cluster of fake agents (h1..h3) kept as state, and a `ClusterContext` over it
 * with injected faults, for the unit tests of cluster checkpoints, restores and image sets.
 */
import assert from 'node:assert/strict';
import { DroverError, ErrorCode, nullLogger, runGroups, toDroverError } from '@drover/common';
import type { AgentInfo, ImageSet, OperationRecord } from '@drover/protocol';
import type { ClusterContext } from './cluster-context.js';
import type { HostView } from './placement.js';
import { MemRecords } from './mem-records.js';

export const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

export interface FakeJob {
  id: string;
  host: string;
  state: string;
  restoredFrom: string | null;
}

/** Agents of h1..h3 as state: jobs, images on each host, the image-set objects. */
export class FakeCluster {
  jobs: FakeJob[] = [];
  images = new Map<string, Set<string>>([
    ['h1', new Set()],
    ['h2', new Set()],
    ['h3', new Set()],
  ]);
  objects = new Set<string>();
  /** Moves made (image and prefix): a repeated move answers again. */
  moved = new Set<string>();
  calls: string[] = [];
  dumps = 0;
  /** image id → its job (what the image's manifest says). */
  readonly imageOwner = new Map<string, string>();
  /** The controller's clock (ms); a host's reads `offsets` ahead of it. */
  clock = 1_000;
  /** How far each host's clock is ahead of the controller's (ms; 0 unless set). */
  readonly offsets = new Map<string, number>();
  /** Each host's last job frozen (its clock); `thaw-many` says its jobs ran again 250 ms later. */
  private readonly lastFrozen = new Map<string, number>();
  readonly ops = new MemRecords<OperationRecord>();
  readonly sets = new MemRecords<ImageSet>();
  readonly keys = new MemRecords<{ key: string }>();

  constructor(placement: [string, string][]) {
    for (const [id, host] of placement)
      this.jobs.push({ id, host, state: 'running', restoredFrom: null });
  }

  live(id: string): FakeJob | undefined {
    return this.jobs.find((j) => j.id === id && ['running', 'frozen'].includes(j.state));
  }

  /** How many checkpoints (dumps) ran at once on each host, at most. */
  readonly maxDumping = new Map<string, number>();
  private readonly dumping = new Map<string, number>();
  /** `checkpoint-many` runs seen, and whether `checkpoint-stop` stopped each. */
  private readonly dumpRuns = new Map<string, boolean>();

  /** One agent operation, done to the fake state. */
  do(host: string, op: string, req: Record<string, unknown>): unknown {
    const jobId = req['jobId'] as string | undefined;
    this.calls.push(`${host} ${op} ${jobId ?? req['imageId'] ?? ''}`);
    const job = this.jobs.find((j) => j.id === jobId && j.host === host && j.state !== 'gone');
    const imgs = this.images.get(host)!;
    switch (op) {
      case 'preflight':
        return { jobId, ok: true, reasons: [], files: [] };
      case 'inspect':
        if (!job) throw new DroverError(ErrorCode.NotFound, `no job ${jobId}`);
        return { ...job, memoryUsageBytes: 1024 };
      case 'freeze':
        job!.state = 'frozen';
        this.clock += 1.5;
        return { ...job, frozenAtMs: this.clock };
      case 'clock':
        // An exchange takes no time on the fake clocks (the hosts' go on at once).
        return { nowMs: this.clock + (this.offsets.get(host) ?? 0) };
      case 'freeze-many': {
        // Unscheduled, one request per host: its jobs 0.5 ms apart on its clock, the hosts 1.5 ms
        // apart. Scheduled: its jobs 0.5 ms apart from the instant on its clock, their freezes
        // requested 0.1 ms apart from it.
        const atMs = req['atMs'] as number | undefined;
        if (atMs === undefined) this.clock += 1.5;
        const base = atMs ?? this.clock;
        const ids = req['jobIds'] as string[];
        const mine = ids.map((id) => this.jobs.find((j) => j.id === id && j.host === host));
        if (mine.some((j) => !j || !['running', 'frozen'].includes(j.state)))
          throw new DroverError(ErrorCode.FailedPrecondition, `a job on ${host} is not running`);
        this.calls[this.calls.length - 1] += ids.join(',') + (atMs === undefined ? '' : ' at');
        this.lastFrozen.set(host, base + (ids.length - 1) / 2);
        return {
          jobs: mine.map((j, i) => ({
            ...j!,
            state: (j!.state = 'frozen'),
            frozenAtMs: base + i / 2,
            ...(atMs === undefined ? {} : { requestedAtMs: atMs + i / 10 }),
          })),
        };
      }
      case 'thaw':
        if (!job || !['running', 'frozen'].includes(job.state))
          throw new DroverError(ErrorCode.FailedPrecondition, `job ${jobId} is not running`);
        job.state = 'running';
        return job;
      case 'checkpoint-stop': {
        const was = this.dumpRuns.has(req['runId'] as string);
        if (was) this.dumpRuns.set(req['runId'] as string, true);
        return { stopped: was };
      }
      case 'dumps-prepare':
        return { prepared: (req['dumps'] as unknown[]).length };
      case 'criu-warm':
        return { started: req['count'] as number, waiting: req['count'] as number };
      case 'thaw-many': {
        const ids = req['jobIds'] as string[];
        this.calls[this.calls.length - 1] += ids.join(',');
        return {
          jobs: ids.map((id) => {
            const j = this.jobs.find((x) => x.id === id && x.host === host);
            if (!j || !['running', 'frozen'].includes(j.state))
              throw new DroverError(ErrorCode.FailedPrecondition, `job ${id} is not running`);
            j.state = 'running';
            return j;
          }),
          thawedAtMs: (this.lastFrozen.get(host) ?? this.clock) + 250,
        };
      }
      case 'checkpoint': {
        const id = req['imageId'] as string;
        if (imgs.has(id)) throw new DroverError(ErrorCode.AlreadyExists, `image ${id} exists`);
        assert.equal(job!.state, 'frozen', 'dumped a job that was not frozen');
        imgs.add(id);
        this.imageOwner.set(id, jobId!);
        this.dumps++;
        return { imageId: id, dumpMs: 7, sizeBytes: 100 };
      }
      case 'images-list':
        return { images: [...imgs].map((imageId) => ({ imageId, dumpMs: 7, sizeBytes: 100 })) };
      case 'images-delete':
        return { deleted: imgs.delete(req['imageId'] as string) };
      case 'image-push':
      case 'image-move': {
        const id = req['imageId'] as string;
        const reply = {
          files: [{ name: 'core.img', size: 100, sha256: 'a'.repeat(64) }],
          sizeBytes: 100,
          durationMs: 1,
        };
        // A move made already (the image is gone) answers again, as the agent does.
        if (op === 'image-move' && this.moved.has(`${id} ${req['prefix'] as string}`)) return reply;
        assert.ok(imgs.has(id), `${op}: an image that is not there`);
        assert.match(req['key'] as string, /^[A-Za-z0-9+/]{43}=$/, 'stored without the set key');
        this.objects.add(`${req['prefix'] as string}/core.img`);
        if (op === 'image-move') {
          imgs.delete(id);
          this.moved.add(`${id} ${req['prefix'] as string}`);
        }
        return reply;
      }
      case 'image-fetch':
        assert.match(req['key'] as string, /^[A-Za-z0-9+/]{43}=$/, 'fetched without the set key');
        assert.ok(this.objects.has(`${req['prefix'] as string}/core.img`), 'fetched no object');
        imgs.add(req['imageId'] as string);
        return { imageId: req['imageId'], durationMs: 1 };
      case 'restore': {
        const id = req['imageId'] as string;
        assert.ok(imgs.has(id), 'restored an image that is not on the host');
        // The agent reads the job from the image's manifest.
        const jobIdOf = this.imageOwner.get(id)!;
        this.jobs = this.jobs.filter((j) => !(j.id === jobIdOf && j.host === host));
        this.jobs.push({ id: jobIdOf, host, state: 'frozen', restoredFrom: id });
        return {};
      }
      case 'discard':
        if (job && ['running', 'frozen'].includes(job.state))
          job.state = req['imageId'] ? 'checkpointed' : 'exited';
        return job;
      default:
        throw new Error(`fake agent has no ${op}`);
    }
  }

  /**
   * A controller over this cluster. `fault(host, op, jobId)` may return 'fail' (the agent
   * reports an error), 'die' (the agent does the work, then this controller dies: every call from
   * now on never returns), 'unknown-op' (an agent from before `op`), 'late' (a scheduled cut
   * that had passed when it came: CUT_MISSED, nothing done) or nothing.
   */
  context(
    fault: (
      host: string,
      op: string,
      jobId: string | undefined,
    ) => 'fail' | 'die' | 'unknown-op' | 'late' | void = () => {},
    cpus: Record<string, number> = {},
  ): ClusterContext {
    let dead = false;
    const hang = new Promise<never>(() => {});
    const views: HostView[] = ['h1', 'h2', 'h3'].map((h) => ({
      host: h,
      info: {
        host: h,
        cpus: cpus[h],
        cpuFlags: ['sse2'],
        memory: { totalBytes: 8 * 2 ** 30, availableBytes: 4 * 2 ** 30 },
        criu: { version: '4.2', lazyPages: true, memTrack: false },
        jobs: [],
      } as unknown as AgentInfo,
      cordoned: false,
      reachable: true,
      lastSeenMs: 0,
    }));
    /** One agent operation with its fault (`f`: asked of `fault` unless given). */
    const call = async (
      host: string,
      op: string,
      r: Record<string, unknown>,
      f = fault(host, op, r['jobId'] as string | undefined),
    ): Promise<unknown> => {
      if (dead) return hang;
      await Promise.resolve();
      if (f === 'fail') throw new DroverError(ErrorCode.Criu, `injected: ${op} on ${host}`);
      if (f === 'unknown-op') throw new DroverError(ErrorCode.NotFound, `unknown operation ${op}`);
      if (f === 'late') {
        throw new DroverError(ErrorCode.CutMissed, `injected: the cut had passed on ${host}`, {
          retryable: true,
        });
      }
      if (op === 'checkpoint') {
        // A dump takes a while: see how many overlap on this host.
        const now = (this.dumping.get(host) ?? 0) + 1;
        this.dumping.set(host, now);
        this.maxDumping.set(host, Math.max(now, this.maxDumping.get(host) ?? 0));
        for (let i = 0; i < 5; i++) await tick();
        this.dumping.set(host, (this.dumping.get(host) ?? 1) - 1);
      }
      const out = this.do(host, op, r);
      if (f === 'die') {
        dead = true;
        return hang;
      }
      return out;
    };
    const ctx: ClusterContext = {
      ops: this.ops,
      sets: this.sets,
      keys: this.keys,
      objects: {
        deletePrefix: async (prefix) => {
          const gone = [...this.objects].filter((o) => o.startsWith(prefix));
          for (const o of gone) this.objects.delete(o);
          return gone.length;
        },
      },
      log: nullLogger,
      retention: 10,
      now: () => this.clock,
      hosts: () => views,
      agent: async (host, op, req) => {
        const r = req as Record<string, unknown>;
        const f = fault(host, op, r['jobId'] as string | undefined);
        if (op !== 'checkpoint-many' || f) return (await call(host, op, r, f)) as never;
        if (dead) return hang;
        // The agent's loop (agent/src/checkpoint.ts), each dump through `checkpoint` and its faults.
        const dumps = r['dumps'] as { jobId: string; imageId: string }[];
        const runId = r['runId'] as string;
        this.dumpRuns.set(runId, false);
        this.calls.push(`${host} checkpoint-many ${dumps.map((d) => d.jobId).join(',')}`);
        const out = new Array<unknown>(dumps.length);
        await runGroups(
          [dumps.map((d, i) => ({ d, i }))],
          () => r['parallel'] as number,
          async ({ d, i }) => {
            if (this.dumpRuns.get(runId))
              throw new DroverError(ErrorCode.FailedPrecondition, `checkpoint ${runId} stopped`);
            const one = { ...d, key: r['key'], leaveRunning: r['leaveRunning'] };
            const image = await call(host, 'checkpoint', one).catch((err: unknown) => {
              const made = this.images.get(host)!.has(d.imageId);
              if (toDroverError(err).code !== ErrorCode.AlreadyExists || !made) throw err;
              return { imageId: d.imageId, dumpMs: 7, sizeBytes: 100 };
            });
            out[i] = { image, startedMs: 0, tookMs: 0 };
          },
        );
        return { dumps: out } as never;
      },
      whereIs: async (jobId) => {
        const j = this.live(jobId);
        return j ? { host: j.host, state: j.state } : null;
      },
      allJobs: async () =>
        this.jobs.map((j) => ({ host: j.host, id: j.id, name: j.id, state: j.state })),
      usableHost: async (host) => {
        if (!views.some((v) => v.host === host))
          throw new DroverError(ErrorCode.NotFound, `no host ${host}`);
      },
      claimAddress: async () => undefined,
    };
    return ctx;
  }
}

export const three = (): FakeCluster =>
  new FakeCluster([
    ['a', 'h1'],
    ['b', 'h2'],
    ['c', 'h3'],
  ]);

export const phasesOf = (o: OperationRecord): string[] => (o.phases ?? []).map((p) => p.phase);
