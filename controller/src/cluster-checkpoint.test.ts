/**
 * Unit tests of the cluster checkpoint state machine over a faked layer below (in-memory
 * records, agents that keep job states: fake-cluster.ts): phase order, the freeze barrier and its
 * skew, rollback, and a controller that dies in each phase and is replaced. The real thing runs
 * end to end in test/src/e2e/cluster-checkpoint.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import { checkpointCluster, runCheckpoint } from './cluster-checkpoint.js';
import { FakeCluster, phasesOf, three, tick } from './fake-cluster.js';

test('stop mode: barrier first, skew from the hosts, images stored, jobs stopped, set complete', async () => {
  const fc = three();
  const op = await checkpointCluster(fc.context(), { all: true, name: 's1' });
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  assert.deepEqual(phasesOf(op), ['freezing', 'dumping', 'storing', 'stopping', 'finished']);
  // A scheduled cut: the three hosts (one job each) froze at the instant.
  assert.equal(op.freezeSkewMs, 0);
  const firstDump = fc.calls.findIndex((c) => c.includes(' checkpoint '));
  const lastFreeze = fc.calls.map((c) => c.includes(' freeze-many ')).lastIndexOf(true);
  assert.ok(lastFreeze < firstDump, `a dump started before every job was frozen: ${fc.calls}`);
  assert.deepEqual(
    fc.jobs.map((j) => j.state),
    ['checkpointed', 'checkpointed', 'checkpointed'],
  );
  const set = (await fc.sets.get('s1'))!.value;
  assert.equal(set.state, 'complete');
  assert.equal(set.freezeSkewMs, 0);
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
  assert.deepEqual(freezes, [
    'h1 freeze-many a,c,e at',
    'h2 freeze-many b at',
    'h3 freeze-many d at',
  ]);
  assert.deepEqual(
    op.freezes!.map(({ host, jobIds, requests, skewMs }) => ({ host, jobIds, requests, skewMs })),
    [
      { host: 'h1', jobIds: ['a', 'c', 'e'], requests: 1, skewMs: 1 },
      { host: 'h2', jobIds: ['b'], requests: 1, skewMs: 0 },
      { host: 'h3', jobIds: ['d'], requests: 1, skewMs: 0 },
    ],
  );
  // h1's jobs at the instant T and 0.5, 1 ms after it; h2's and h3's at T: first to last.
  assert.equal(op.freezeSkewMs, 1);
  const t = op.cut!.atMs;
  assert.deepEqual(
    op.members!.map((m) => [m.jobId, m.frozenAtMs! - t]),
    [
      ['a', 0],
      ['b', 0],
      ['c', 0.5],
      ['d', 0],
      ['e', 1],
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

test('dumps run as many at a time on each host as it has CPUs (1 when it does not say), or --dumps-per-host', async () => {
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
  assert.ok(op.members!.every((m) => m.state === 'done' && m.dumpMs !== null));
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
  // A number set: that many, whatever the CPUs.
  const fc3 = new FakeCluster(placement);
  await checkpointCluster(
    { ...fc3.context(() => undefined, { h1: 8, h2: 1 }), dumpsPerHost: 2 },
    { all: true, name: 's3' },
  );
  assert.deepEqual(Object.fromEntries(fc3.maxDumping), { h1: 2, h2: 2, h3: 2 });
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

test('one checkpoint-many per host; an agent without it gets one checkpoint per dump', async () => {
  const placement: [string, string][] = [];
  for (let i = 0; i < 3; i++) placement.push([`a${i}`, 'h1'], [`b${i}`, 'h2']);
  const fc = new FakeCluster(placement);
  const op = await checkpointCluster(
    fc.context(
      (host, op) => (host === 'h2' && op === 'checkpoint-many' ? 'unknown-op' : undefined),
      {
        h1: 2,
        h2: 2,
      },
    ),
    { all: true, name: 's1', leaveRunning: true },
  );
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  assert.deepEqual(
    fc.calls.filter((c) => /^h1 checkpoint/.test(c)),
    ['h1 checkpoint-many a0,a1,a2', 'h1 checkpoint a0', 'h1 checkpoint a1', 'h1 checkpoint a2'],
  );
  // h2 refused the request (an older agent): its dumps went one request each, two at a time.
  assert.deepEqual(
    fc.calls.filter((c) => /^h2 checkpoint/.test(c)),
    ['h2 checkpoint b0', 'h2 checkpoint b1', 'h2 checkpoint b2'],
  );
  assert.deepEqual(Object.fromEntries(fc.maxDumping), { h1: 2, h2: 2 });
  assert.ok(op.members!.every((m) => m.state === 'done' && m.dumpMs === 7));
});

test('a host whose dumps fail stops the others: checkpoint-stop, then the rollback', async () => {
  const placement: [string, string][] = [];
  for (let i = 0; i < 4; i++) placement.push([`a${i}`, 'h1'], [`b${i}`, 'h2'], [`c${i}`, 'h3']);
  const fc = new FakeCluster(placement);
  const op = await checkpointCluster(
    fc.context((_, op, jobId) => (op === 'checkpoint' && jobId === 'a0' ? 'fail' : undefined), {
      h1: 1,
      h2: 1,
      h3: 1,
    }),
    { all: true, name: 's1' },
  );
  assert.equal(op.state, 'failed');
  const stops = fc.calls.filter((c) => / checkpoint-stop /.test(c)).sort();
  assert.deepEqual(stops, ['h2 checkpoint-stop ', 'h3 checkpoint-stop ']);
  // a0 failed at once; b0 and c0 were under way and finished; nothing started after.
  assert.deepEqual(fc.calls.filter((c) => / checkpoint [bc]/.test(c)).sort(), [
    'h2 checkpoint b0',
    'h3 checkpoint c0',
  ]);
  // The stops came before any thaw of the rollback.
  const firstThaw = fc.calls.findIndex((c) => / thaw /.test(c));
  assert.ok(fc.calls.findIndex((c) => / checkpoint-stop /.test(c)) < firstThaw);
  assert.ok(fc.jobs.every((j) => j.state === 'running'));
  assert.ok(
    [...fc.images.values()].every((imgs) => imgs.size === 0),
    'every image dropped',
  );
});

test('--leave-running: the jobs run again without waiting for the dumps or the phase to be written', async () => {
  const fc = three();
  // Each write of the operation's record takes a while; when it ends, in order with the calls.
  const put = fc.ops.put.bind(fc.ops);
  fc.ops.put = async (k, v) => {
    for (let i = 0; i < 20; i++) await tick();
    const dumped = v.members?.filter((m) => m.state === 'dumped').length ?? 0;
    fc.calls.push(`written ${v.phase} dumped=${dumped}`);
    return put(k, v);
  };
  const op = await checkpointCluster(fc.context(), { all: true, name: 's1', leaveRunning: true });
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  const thaw = fc.calls.findIndex((c) => / thaw-many /.test(c));
  const allDumped = fc.calls.findIndex((c) => /^written .* dumped=3/.test(c));
  assert.ok(thaw > 0 && allDumped > thaw, fc.calls.join('\n'));
  assert.ok(fc.jobs.every((j) => j.state === 'running'));
  assert.deepEqual(phasesOf(op), ['freezing', 'dumping', 'thawing', 'storing', 'finished']);
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
  const firstPush = fc.calls.findIndex((c) => c.includes(' image-move '));
  const lastThaw = fc.calls.map((c) => c.includes(' thaw ')).lastIndexOf(true);
  assert.ok(lastThaw < firstPush);
  assert.equal((await fc.sets.get('s1'))!.value.jobs.length, 2);
});

test('--leave-running thaws each host with one request; one per job on an agent without it', async () => {
  const fc = new FakeCluster([
    ['a', 'h1'],
    ['b', 'h1'],
    ['c', 'h2'],
    ['d', 'h2'],
  ]);
  const op = await checkpointCluster(
    fc.context((host, op) => (host === 'h2' && op === 'thaw-many' ? 'unknown-op' : undefined)),
    { all: true, name: 's1', leaveRunning: true },
  );
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  assert.deepEqual(fc.calls.filter((c) => / thaw(-many)? /.test(c)).sort(), [
    'h1 thaw-many a,b',
    'h2 thaw c',
    'h2 thaw d',
  ]);
  assert.ok(fc.jobs.every((j) => j.state === 'running'));
  // Only the host that answered thaw-many says when its jobs ran again.
  assert.deepEqual(
    op.freezes!.map((f) => [f.host, typeof f.thawedAtMs]),
    [
      ['h1', 'number'],
      ['h2', 'undefined'],
    ],
  );
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

/**
 * A controller checkpointing `fc` that dies once `op` on `host` has run; the operation it left
 * and its phase then.
 */
async function diesAfter(
  fc: FakeCluster,
  host: string,
  op: string,
  req: Parameters<typeof checkpointCluster>[1],
): Promise<{ opId: string; phase: string | undefined }> {
  let died = false;
  void checkpointCluster(
    fc.context((h, o) => (h === host && o === op ? ((died = true), 'die') : undefined)),
    req,
  );
  for (let i = 0; i < 50 && !died; i++) await tick();
  for (let i = 0; i < 10; i++) await tick();
  assert.ok(died);
  const [opId] = [...(await fc.ops.list()).keys()];
  return { opId: opId!, phase: (await fc.ops.get(opId!))!.value.phase };
}

for (const [phase, op, host, leaveRunning] of [
  ['freezing', 'freeze-many', 'h2', false],
  ['dumping', 'checkpoint', 'h2', false],
  // The move ran (h3's image is gone): the next controller's repeat gets its reply again.
  ['storing', 'image-move', 'h3', false],
  ['stopping', 'discard', 'h2', false],
  // The thaws ran but were not recorded yet: the next controller finds the cut still dumping.
  ['dumping', 'thaw-many', 'h3', true],
] as const) {
  test(`the controller dies in ${phase} (after ${op} on ${host} ran${leaveRunning ? ', --leave-running' : ''}); the next one completes the set`, async () => {
    const fc = three();
    const left = await diesAfter(fc, host, op, { all: true, name: 's1', leaveRunning });
    assert.equal(left.phase, phase);
    const done = await runCheckpoint(fc.context(), left.opId);
    assert.equal(done.state, 'done', JSON.stringify(done.error));
    assert.equal(fc.dumps, 3, 'each job dumped exactly once');
    const end = leaveRunning ? 'running' : 'checkpointed';
    assert.deepEqual(
      fc.jobs.map((j) => j.state),
      [end, end, end],
    );
    assert.equal((await fc.sets.get('s1'))!.value.state, 'complete');
    assert.equal(fc.objects.size, 3);
  });
}

test('each image moves into the set (the local copy goes with it); a host without moves pushes', async () => {
  const fc = three();
  const op = await checkpointCluster(
    fc.context((host, op) => (host === 'h2' && op === 'image-move' ? 'unknown-op' : undefined)),
    { all: true, name: 's1', leaveRunning: true },
  );
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  const stores = fc.calls
    .filter((c) => / image-(push|move) /.test(c))
    .map((c) => c.split(' ').slice(0, 2).join(' '));
  // (A call refused as unknown is not among the calls made.)
  assert.deepEqual(stores.sort(), ['h1 image-move', 'h2 image-push', 'h3 image-move']);
  assert.equal(fc.objects.size, 3);
  assert.equal((await fc.sets.get('s1'))!.value.jobs.length, 3);
  // Every local copy is gone: moved ones with their move, h2's pushed one at the end.
  for (const h of ['h1', 'h2', 'h3']) assert.equal(fc.images.get(h)!.size, 0, h);
});

test("each host starts its dumps' CRIU and readies its dumps before the cut; a host that cannot is no failure", async () => {
  const fc = new FakeCluster([
    ['a', 'h1'],
    ['b', 'h1'],
    ['c', 'h2'],
  ]);
  const refused: string[] = [];
  const op = await checkpointCluster(
    fc.context((host, op) => {
      if (host !== 'h2' || (op !== 'criu-warm' && op !== 'dumps-prepare')) return undefined;
      refused.push(op);
      return 'unknown-op';
    }),
    { all: true, name: 's1', leaveRunning: true },
  );
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  assert.deepEqual(refused.sort(), ['criu-warm', 'dumps-prepare'], 'each asked once');
  const firstFreeze = fc.calls.findIndex((c) => c.includes(' freeze-many '));
  for (const ready of ['h1 criu-warm', 'h1 dumps-prepare']) {
    const at = fc.calls.findIndex((c) => c.startsWith(ready));
    assert.ok(at >= 0 && at < firstFreeze, `${ready} not before the freeze: ${fc.calls}`);
  }
  assert.ok(fc.jobs.every((j) => j.state === 'running'));
});
