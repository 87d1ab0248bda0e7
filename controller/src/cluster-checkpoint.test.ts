/**
 * Unit tests of the cluster checkpoint/restore state machine over a faked layer below (in-memory
 * records, agents that keep job states): phase order, the freeze barrier and its skew, rollback,
 * and a controller that dies in each phase and is replaced. The real thing runs end to end in
 * test/src/e2e/cluster-checkpoint.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError, ErrorCode, isDroverError, nullLogger } from '@drover/common';
import type { AgentInfo, ImageSet, OperationRecord } from '@drover/protocol';
import {
  checkpointCluster,
  restoreCluster,
  runCheckpoint,
  type ClusterContext,
  type Records,
} from './cluster-checkpoint.js';
import type { HostView } from './placement.js';

class MemRecords<T> implements Records<T> {
  private readonly m = new Map<string, { value: T; revision: number }>();
  private rev = 0;
  async get(k: string): Promise<{ value: T; revision: number } | null> {
    const v = this.m.get(k);
    return v ? structuredClone(v) : null;
  }
  async put(k: string, value: T): Promise<number> {
    this.m.set(k, { value: structuredClone(value), revision: ++this.rev });
    return this.rev;
  }
  async create(k: string, value: T): Promise<number> {
    if (this.m.has(k)) throw new DroverError(ErrorCode.AlreadyExists, `${k} exists`);
    return this.put(k, value);
  }
  async mutate(
    k: string,
    fn: (cur: T | null) => T | null,
  ): Promise<{ value: T; revision: number } | null> {
    const next = fn(structuredClone(this.m.get(k)?.value ?? null));
    if (next === null) {
      this.m.delete(k);
      return null;
    }
    return { value: next, revision: await this.put(k, next) };
  }
  async delete(k: string): Promise<void> {
    this.m.delete(k);
  }
  async list(): Promise<Map<string, { value: T; revision: number }>> {
    return new Map([...this.m].map(([k, v]) => [k, structuredClone(v)]));
  }
}

interface FakeJob {
  id: string;
  host: string;
  state: string;
  restoredFrom: string | null;
}

/** Agents of h1..h3 as state: jobs, images on each host, the image-set objects. */
class FakeCluster {
  jobs: FakeJob[] = [];
  images = new Map<string, Set<string>>([
    ['h1', new Set()],
    ['h2', new Set()],
    ['h3', new Set()],
  ]);
  objects = new Set<string>();
  calls: string[] = [];
  dumps = 0;
  /** image id → its job (what the image's manifest says). */
  readonly imageOwner = new Map<string, string>();
  private clock = 1_000;
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
      case 'thaw':
        if (!job || !['running', 'frozen'].includes(job.state))
          throw new DroverError(ErrorCode.FailedPrecondition, `job ${jobId} is not running`);
        job.state = 'running';
        return job;
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
        assert.ok(imgs.has(req['imageId'] as string), 'pushed an image that is not there');
        assert.match(req['key'] as string, /^[A-Za-z0-9+/]{43}=$/, 'pushed without the set key');
        this.objects.add(`${req['prefix'] as string}/core.img`);
        return {
          files: [{ name: 'core.img', size: 100, sha256: 'a'.repeat(64) }],
          sizeBytes: 100,
          durationMs: 1,
        };
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
   * now on never returns) or nothing.
   */
  context(
    fault: (
      host: string,
      op: string,
      jobId: string | undefined,
    ) => 'fail' | 'die' | void = () => {},
  ): ClusterContext {
    let dead = false;
    const hang = new Promise<never>(() => {});
    const views: HostView[] = ['h1', 'h2', 'h3'].map((h) => ({
      host: h,
      info: {
        host: h,
        cpuFlags: ['sse2'],
        memory: { totalBytes: 8 * 2 ** 30, availableBytes: 4 * 2 ** 30 },
        criu: { version: '4.2', lazyPages: true, memTrack: false },
        jobs: [],
      } as unknown as AgentInfo,
      cordoned: false,
      reachable: true,
      lastSeenMs: 0,
    }));
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
      hosts: () => views,
      agent: async (host, op, req) => {
        if (dead) return hang;
        await Promise.resolve();
        const r = req as Record<string, unknown>;
        const f = fault(host, op, r['jobId'] as string | undefined);
        if (f === 'fail') throw new DroverError(ErrorCode.Criu, `injected: ${op} on ${host}`);
        const out = this.do(host, op, r);
        if (f === 'die') {
          dead = true;
          return hang;
        }
        return out as never;
      },
      whereIs: async (jobId) => {
        const j = this.live(jobId);
        return j ? { host: j.host, state: j.state } : null;
      },
      allJobs: async () =>
        this.jobs.map((j) => ({ host: j.host, id: j.id, name: j.id, state: j.state })),
      usableHost: (host) => {
        if (!views.some((v) => v.host === host))
          throw new DroverError(ErrorCode.NotFound, `no host ${host}`);
      },
      claimAddress: async () => undefined,
    };
    return ctx;
  }
}

const three = (): FakeCluster =>
  new FakeCluster([
    ['a', 'h1'],
    ['b', 'h2'],
    ['c', 'h3'],
  ]);

const phasesOf = (o: OperationRecord): string[] => (o.phases ?? []).map((p) => p.phase);
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('stop mode: barrier first, skew from the hosts, images stored, jobs stopped, set complete', async () => {
  const fc = three();
  const op = await checkpointCluster(fc.context(), { all: true, name: 's1' });
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  assert.deepEqual(phasesOf(op), ['freezing', 'dumping', 'storing', 'stopping', 'finished']);
  // Three freezes 1.5 ms apart on the fake hosts' clocks.
  assert.equal(op.freezeSkewMs, 3);
  const firstDump = fc.calls.findIndex((c) => c.includes(' checkpoint '));
  const lastFreeze = fc.calls.map((c) => c.includes(' freeze ')).lastIndexOf(true);
  assert.ok(lastFreeze < firstDump, `a dump started before every job was frozen: ${fc.calls}`);
  assert.deepEqual(
    fc.jobs.map((j) => j.state),
    ['checkpointed', 'checkpointed', 'checkpointed'],
  );
  const set = (await fc.sets.get('s1'))!.value;
  assert.equal(set.state, 'complete');
  assert.equal(set.freezeSkewMs, 3);
  assert.deepEqual(
    set.jobs.map((j) => j.files.length),
    [1, 1, 1],
  );
  assert.equal(fc.objects.size, 3);
  assert.deepEqual(
    [...fc.images.values()].map((s) => s.size),
    [0, 0, 0],
    'local copies deleted once stored',
  );
});

test('--leave-running thaws right after the dumps, before the upload', async () => {
  const fc = three();
  const op = await checkpointCluster(fc.context(), {
    jobs: ['a', 'c'],
    name: 's1',
    leaveRunning: true,
  });
  assert.equal(op.state, 'done');
  assert.deepEqual(phasesOf(op), ['freezing', 'dumping', 'thawing', 'storing', 'finished']);
  assert.deepEqual(
    fc.jobs.map((j) => j.state),
    ['running', 'running', 'running'],
  );
  const firstPush = fc.calls.findIndex((c) => c.includes(' image-push '));
  const lastThaw = fc.calls.map((c) => c.includes(' thaw ')).lastIndexOf(true);
  assert.ok(lastThaw < firstPush);
  assert.equal((await fc.sets.get('s1'))!.value.jobs.length, 2);
});

test('a failed dump rolls back: every job thawed, no image, no object, no set', async () => {
  const fc = three();
  const op = await checkpointCluster(
    fc.context((host, op) => (host === 'h2' && op === 'checkpoint' ? 'fail' : undefined)),
    { all: true, name: 's1' },
  );
  assert.equal(op.state, 'failed');
  assert.match(op.error!.message, /injected: checkpoint on h2; every job was thawed where it was/);
  assert.deepEqual(
    fc.jobs.map((j) => j.state),
    ['running', 'running', 'running'],
  );
  assert.equal(await fc.sets.get('s1'), null);
  assert.equal(await fc.keys.get('s1'), null, 'the key of a rolled-back set was kept');
  assert.equal(fc.objects.size, 0);
  assert.deepEqual(
    [...fc.images.values()].map((s) => s.size),
    [0, 0, 0],
  );
  assert.ok(op.members!.every((m) => m.state === 'rolled-back'));
});

test('bad input changes nothing: both or neither of jobs/--all, unknown job, set name taken', async () => {
  const fc = three();
  const ctx = fc.context();
  await assert.rejects(checkpointCluster(ctx, {}), (e) => isDroverError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(checkpointCluster(ctx, { jobs: ['x'] }), (e) =>
    isDroverError(e, 'NOT_FOUND'),
  );
  await checkpointCluster(ctx, { jobs: ['a'], name: 's1', leaveRunning: true });
  const before = fc.calls.length;
  await assert.rejects(checkpointCluster(ctx, { all: true, name: 's1' }), (e) =>
    isDroverError(e, 'ALREADY_EXISTS'),
  );
  assert.equal(fc.calls.length, before, 'an agent was asked to do something');
  assert.equal((await fc.ops.list()).size, 1);
});

for (const [phase, op, host] of [
  ['freezing', 'freeze', 'h2'],
  ['dumping', 'checkpoint', 'h2'],
  ['storing', 'image-push', 'h3'],
  ['stopping', 'discard', 'h2'],
] as const) {
  test(`the controller dies in ${phase} (after ${op} on ${host} ran); the next one completes the set`, async () => {
    const fc = three();
    let died = false;
    void checkpointCluster(
      fc.context((h, o) => (h === host && o === op ? ((died = true), 'die') : undefined)),
      { all: true, name: 's1' },
    );
    for (let i = 0; i < 50 && !died; i++) await tick();
    for (let i = 0; i < 10; i++) await tick();
    assert.ok(died);
    const [opId] = [...(await fc.ops.list()).keys()];
    assert.equal((await fc.ops.get(opId!))!.value.phase, phase);
    const done = await runCheckpoint(fc.context(), opId!);
    assert.equal(done.state, 'done', JSON.stringify(done.error));
    assert.equal(fc.dumps, 3, 'each job dumped exactly once');
    assert.deepEqual(
      fc.jobs.map((j) => j.state),
      ['checkpointed', 'checkpointed', 'checkpointed'],
    );
    assert.equal((await fc.sets.get('s1'))!.value.state, 'complete');
    assert.equal(fc.objects.size, 3);
  });
}

test('restore: placed among --to hosts, restored frozen, all thawed together; refused while live', async () => {
  const fc = three();
  await checkpointCluster(fc.context(), { all: true, name: 's1' });
  const ctx = fc.context();
  await assert.rejects(restoreCluster(ctx, { name: 's1', to: ['h9'] }), (e) =>
    isDroverError(e, 'NOT_FOUND'),
  );
  await assert.rejects(restoreCluster(ctx, { name: 'nope' }), (e) => isDroverError(e, 'NOT_FOUND'));
  const op = await restoreCluster(ctx, { name: 's1', to: ['h2', 'h3'] });
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  assert.deepEqual(phasesOf(op), ['fetching', 'restoring', 'resuming', 'finished']);
  for (const id of ['a', 'b', 'c']) {
    const j = fc.live(id);
    assert.ok(
      j && ['h2', 'h3'].includes(j.host) && j.state === 'running',
      `${id}: ${JSON.stringify(j)}`,
    );
  }
  const firstThaw = fc.calls.findIndex((c) => c.includes(' thaw '));
  const lastRestore = fc.calls.map((c) => c.includes(' restore ')).lastIndexOf(true);
  assert.ok(lastRestore < firstThaw, 'a job ran before every job was restored');
  await assert.rejects(
    restoreCluster(ctx, { name: 's1' }),
    (e) => isDroverError(e, 'FAILED_PRECONDITION') && /stop those jobs first/.test(String(e)),
  );
});

test('a failed restore discards what it restored; the set is untouched and restores later', async () => {
  const fc = three();
  await checkpointCluster(fc.context(), { all: true, name: 's1' });
  let n = 0;
  const failed = await restoreCluster(
    fc.context((_h, o) => (o === 'restore' && ++n === 2 ? 'fail' : undefined)),
    { name: 's1' },
  );
  assert.equal(failed.state, 'failed');
  assert.match(failed.error!.message, /nothing was restored/);
  for (const id of ['a', 'b', 'c']) assert.equal(fc.live(id), undefined, `${id} left running`);
  const again = await restoreCluster(fc.context(), { name: 's1' });
  assert.equal(again.state, 'done');
  for (const id of ['a', 'b', 'c']) assert.equal(fc.live(id)?.state, 'running');
});

test('retention keeps the newest complete sets; older ones and their objects go', async () => {
  const fc = three();
  const ctx = { ...fc.context(), retention: 2 };
  for (const name of ['s1', 's2', 's3']) {
    await checkpointCluster(ctx, { jobs: ['a'], name, leaveRunning: true });
    await new Promise((r) => setTimeout(r, 5)); // distinct creation times
  }
  assert.deepEqual([...(await fc.sets.list()).keys()].sort(), ['s2', 's3']);
  assert.deepEqual(
    [...(await fc.keys.list()).keys()].sort(),
    ['s2', 's3'],
    'the key of s1 was kept',
  );
  assert.deepEqual(
    [...fc.objects].map((o) => o.split('/')[0]).sort(),
    ['s2', 's3'],
    'the objects of s1 were kept',
  );
});
