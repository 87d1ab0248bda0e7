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
} from './cluster-checkpoint.js';
import type { HostView } from './placement.js';
import { MemRecords } from './mem-records.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

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

  /** How many checkpoints (dumps) ran at once on each host, at most. */
  readonly maxDumping = new Map<string, number>();
  private readonly dumping = new Map<string, number>();

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
      case 'freeze-many': {
        // One request per host: its jobs 0.5 ms apart on its clock, the hosts 1.5 ms apart.
        this.clock += 1.5;
        const ids = req['jobIds'] as string[];
        const mine = ids.map((id) => this.jobs.find((j) => j.id === id && j.host === host));
        if (mine.some((j) => !j || !['running', 'frozen'].includes(j.state)))
          throw new DroverError(ErrorCode.FailedPrecondition, `a job on ${host} is not running`);
        this.calls[this.calls.length - 1] += ids.join(',');
        return {
          jobs: mine.map((j, i) => ({
            ...j!,
            state: (j!.state = 'frozen'),
            frozenAtMs: this.clock + i / 2,
          })),
        };
      }
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
    ) => 'fail' | 'die' | 'unknown-op' | void = () => {},
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
        if (f === 'unknown-op')
          throw new DroverError(ErrorCode.NotFound, `unknown operation ${op}`);
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

test('stop mode: barrier first, skew from the hosts, images stored, jobs stopped, set complete', async () => {
  const fc = three();
  const op = await checkpointCluster(fc.context(), { all: true, name: 's1' });
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  assert.deepEqual(phasesOf(op), ['freezing', 'dumping', 'storing', 'stopping', 'finished']);
  // Three hosts' freezes 1.5 ms apart on the fake hosts' clocks.
  assert.equal(op.freezeSkewMs, 3);
  const firstDump = fc.calls.findIndex((c) => c.includes(' checkpoint '));
  const lastFreeze = fc.calls.map((c) => c.includes(' freeze-many ')).lastIndexOf(true);
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

test('the barrier is one request per host with all its jobs; skew across hosts and per host', async () => {
  const fc = new FakeCluster([
    ['a', 'h1'],
    ['b', 'h2'],
    ['c', 'h1'],
    ['d', 'h3'],
    ['e', 'h1'],
  ]);
  const op = await checkpointCluster(fc.context(), { all: true, name: 's1', leaveRunning: true });
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  const freezes = fc.calls.filter((c) => / freeze/.test(c));
  assert.deepEqual(freezes, ['h1 freeze-many a,c,e', 'h2 freeze-many b', 'h3 freeze-many d']);
  assert.deepEqual(op.freezes, [
    { host: 'h1', jobIds: ['a', 'c', 'e'], requests: 1, skewMs: 1 },
    { host: 'h2', jobIds: ['b'], requests: 1, skewMs: 0 },
    { host: 'h3', jobIds: ['d'], requests: 1, skewMs: 0 },
  ]);
  // h1's jobs at 1001.5, 1002, 1002.5; h2's at 1003, h3's at 1004.5: first to last.
  assert.equal(op.freezeSkewMs, 3);
  assert.deepEqual(
    op.members!.map((m) => [m.jobId, m.frozenAtMs]),
    [
      ['a', 1001.5],
      ['b', 1003],
      ['c', 1002],
      ['d', 1004.5],
      ['e', 1002.5],
    ],
  );
});

test('a host that cannot freeze its jobs: every job thawed, nothing dumped', async () => {
  const fc = three();
  const op = await checkpointCluster(
    fc.context((host, op) => (host === 'h3' && op === 'freeze-many' ? 'fail' : undefined)),
    { all: true, name: 's1' },
  );
  assert.equal(op.state, 'failed');
  assert.match(op.error!.message, /injected: freeze-many on h3; every job was thawed where it was/);
  assert.equal(fc.dumps, 0);
  assert.deepEqual(
    fc.jobs.map((j) => j.state),
    ['running', 'running', 'running'],
  );
  assert.equal(await fc.sets.get('s1'), null);
});

test('an agent from before freeze-many: its jobs are frozen one request each', async () => {
  const fc = new FakeCluster([
    ['a', 'h1'],
    ['b', 'h2'],
    ['c', 'h2'],
  ]);
  const op = await checkpointCluster(
    fc.context((host, op) => (host === 'h2' && op === 'freeze-many' ? 'unknown-op' : undefined)),
    { all: true, name: 's1' },
  );
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  assert.deepEqual(
    op.freezes!.map((f) => [f.host, f.requests]),
    [
      ['h1', 1],
      ['h2', 2],
    ],
  );
  assert.deepEqual(
    fc.calls.filter((c) => / freeze /.test(c)),
    ['h2 freeze b', 'h2 freeze c'],
  );
  assert.deepEqual(
    fc.jobs.map((j) => j.state),
    ['checkpointed', 'checkpointed', 'checkpointed'],
  );
});

test('dumps run as many at a time on each host as it has CPUs (1 when it does not say)', async () => {
  const placement: [string, string][] = [];
  for (let i = 0; i < 5; i++) placement.push([`a${i}`, 'h1']);
  for (let i = 0; i < 3; i++) placement.push([`b${i}`, 'h2']);
  for (let i = 0; i < 4; i++) placement.push([`c${i}`, 'h3']);
  const fc = new FakeCluster(placement);
  const op = await checkpointCluster(
    fc.context(() => undefined, { h1: 3, h2: 0 }),
    {
      all: true,
      name: 's1',
    },
  );
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  assert.equal(fc.dumps, 12);
  assert.deepEqual(Object.fromEntries(fc.maxDumping), { h1: 3, h2: 1, h3: 1 });
  // More CPUs than jobs: every job of the host at once.
  const fc2 = new FakeCluster(placement);
  await checkpointCluster(
    fc2.context(() => undefined, { h1: 8, h2: 8, h3: 8 }),
    {
      all: true,
      name: 's2',
    },
  );
  assert.deepEqual(Object.fromEntries(fc2.maxDumping), { h1: 5, h2: 3, h3: 4 });
});

test('after a failed dump no new dump starts on any host', async () => {
  const placement: [string, string][] = [];
  for (let i = 0; i < 4; i++) placement.push([`a${i}`, 'h1'], [`b${i}`, 'h2']);
  const fc = new FakeCluster(placement);
  const op = await checkpointCluster(
    fc.context((host, op, jobId) => (op === 'checkpoint' && jobId === 'a0' ? 'fail' : undefined), {
      h1: 1,
      h2: 1,
    }),
    { all: true, name: 's1' },
  );
  assert.equal(op.state, 'failed');
  // a0 failed at once; b0 was under way on h2 and finished; nothing started after.
  assert.deepEqual(
    fc.calls.filter((c) => / checkpoint /.test(c)),
    ['h2 checkpoint b0'],
  );
  assert.ok(fc.jobs.every((j) => j.state === 'running'));
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
  ['freezing', 'freeze-many', 'h2'],
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
