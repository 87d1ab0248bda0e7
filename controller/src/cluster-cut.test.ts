/**
 * Unit tests of a cluster checkpoint's scheduled cut (cluster-cut.ts): the clock estimate, the
 * margin and the plan on fake clocks, and the freezing phase over fake agents (fake-cluster.ts)
 * whose clocks are set apart: each host is sent the one instant in its own clock, a host that
 * misses it makes a later plan, an older agent an unscheduled cut.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError, ErrorCode } from '@drover/common';
import { checkpointCluster } from './cluster-checkpoint.js';
import {
  CUT,
  cutMargin,
  estimateClock,
  planCut,
  readClocks,
  sampleClock,
  type ClockSample,
} from './cluster-cut.js';
import { FakeCluster, three } from './fake-cluster.js';

test('the clock estimate takes the middle of the exchange with the shortest round trip', () => {
  const samples: ClockSample[] = [
    // Held up on the way back: its middle is 4 ms off.
    { sentMs: 100, hostMs: 150.5, receivedMs: 109 },
    // The shortest: the host's clock is 50 ms ahead.
    { sentMs: 110, hostMs: 160.5, receivedMs: 111 },
    { sentMs: 120, hostMs: 172, receivedMs: 124 },
  ];
  assert.deepEqual(estimateClock(samples), { offsetMs: 50, rttMs: 1 });
  // Behind is negative.
  assert.deepEqual(estimateClock([{ sentMs: 10, hostMs: 3, receivedMs: 12 }]), {
    offsetMs: -8,
    rttMs: 2,
  });
  assert.throws(() => estimateClock([]), RangeError);
});

test('sampling reads a clock n times, one exchange after the other, on the fake clocks', async () => {
  let now = 1000;
  let inFlight = 0;
  const rtts = [3, 0.5, 2];
  const read = async (): Promise<number> => {
    inFlight++;
    assert.equal(inFlight, 1, 'two exchanges at once');
    const rtt = rtts.shift()!;
    now += rtt / 2;
    const host = now + 7.25;
    now += rtt / 2;
    await Promise.resolve();
    inFlight--;
    return host;
  };
  const samples = await sampleClock(read, () => now, 3);
  assert.deepEqual(
    samples.map((s) => s.receivedMs - s.sentMs),
    [3, 0.5, 2],
  );
  assert.deepEqual(estimateClock(samples), { offsetMs: 7.25, rttMs: 0.5 });
});

test('the margin: twice the longest round trip and the preparation, within floor and ceiling', () => {
  assert.equal(cutMargin([0.3, 0.5], 1), CUT.floorMs);
  assert.equal(cutMargin([2, 40], 1), 2 * 40 + CUT.prepareMs);
  assert.equal(cutMargin([5000], 1), CUT.ceilingMs);
  // Each miss doubles it, never past the ceiling.
  assert.equal(cutMargin([0.3], 2), 2 * CUT.floorMs);
  assert.equal(cutMargin([0.3], 3), 4 * CUT.floorMs);
  assert.equal(cutMargin([300], 2), CUT.ceilingMs);
});

test('a plan sends every host the one instant in its own clock', () => {
  const clocks = new Map([
    ['h1', { offsetMs: 0, rttMs: 1 }],
    ['h2', { offsetMs: 40, rttMs: 30 }],
    ['h3', { offsetMs: -25.5, rttMs: 2 }],
  ]);
  const plan = planCut(5000, clocks, 1);
  assert.equal(plan.marginMs, 2 * 30 + CUT.prepareMs);
  assert.equal(plan.atMs, 5000 + plan.marginMs);
  assert.deepEqual(
    [...plan.hosts].map(([h, c]) => [h, c.atMs - plan.atMs, c.offsetMs, c.rttMs]),
    [
      ['h1', 0, 0, 1],
      ['h2', 40, 40, 30],
      ['h3', -25.5, -25.5, 2],
    ],
  );
});

test('an agent that does not know `clock` makes the whole cut unscheduled; other errors go out', async () => {
  const unknown = new DroverError(ErrorCode.NotFound, 'unknown operation clock');
  const read = async (h: string): Promise<number> => {
    if (h === 'h2') throw unknown;
    return 1;
  };
  assert.equal(await readClocks(['h1', 'h2'], read, () => 0), null);
  const down = async (): Promise<number> => {
    throw new DroverError(ErrorCode.Unavailable, 'no answer', { retryable: true });
  };
  await assert.rejects(
    readClocks(['h1'], down, () => 0),
    { code: ErrorCode.Unavailable },
  );
});

test('a scheduled cut over hosts whose clocks differ: each froze at the instant in its clock; the record holds it all', async () => {
  const fc = new FakeCluster([
    ['a', 'h1'],
    ['b', 'h2'],
    ['c', 'h3'],
    ['d', 'h1'],
  ]);
  fc.offsets.set('h2', 40).set('h3', -25.5);
  const op = await checkpointCluster(fc.context(), { all: true, name: 's1', leaveRunning: true });
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  // Frozen from the first job frozen to the last thawed, as the hosts said, offsets removed: every
  // host froze at the instant and thawed 250 ms after its last job (h1's second, 0.5 ms later).
  assert.equal(op.frozenMs, 251);
  assert.deepEqual(
    op.freezes!.map((f) => f.thawedAtMs! - f.cutAtMs!),
    op.freezes!.map((f) => (f.host === 'h1' ? 250.5 : 250)),
  );
  // The clocks are read first, CUT.samples times each, then one freeze request per host.
  const calls = fc.calls.filter((c) => / (clock|freeze-many) /.test(c));
  assert.deepEqual(calls.slice(-3).sort(), [
    'h1 freeze-many a,d at',
    'h2 freeze-many b at',
    'h3 freeze-many c at',
  ]);
  for (const h of ['h1', 'h2', 'h3']) {
    assert.equal(calls.slice(0, -3).filter((c) => c.startsWith(`${h} clock`)).length, CUT.samples);
  }
  const cut = op.cut!;
  assert.equal(cut.attempts, 1);
  assert.equal(cut.marginMs, CUT.floorMs);
  const by = new Map(op.freezes!.map((f) => [f.host, f]));
  assert.deepEqual(
    ['h1', 'h2', 'h3'].map((h) => {
      const f = by.get(h)!;
      return [h, f.cutAtMs! - cut.atMs, f.offsetMs, f.rttMs, f.lateMs];
    }),
    [
      ['h1', 0, 0, 0, 0.5],
      ['h2', 40, 40, 0, 0],
      ['h3', -25.5, -25.5, 0, 0],
    ],
  );
  // Every job froze at or after its host's instant.
  for (const m of op.members!) assert.ok(m.frozenAtMs! >= by.get(m.host)!.cutAtMs!, m.jobId);
  // On the hosts' clocks the spread is their offsets'; on the controller's, h1's own 0.5 ms.
  assert.equal(op.freezeSkewMs, 65.5);
  assert.equal(cut.skewMs, 0.5);
  // The requests (the cut itself): the same on the hosts' clocks, h1's 0.1 ms on the controller's.
  assert.equal(op.requestSkewMs, 65.5);
  assert.equal(cut.requestSkewMs, 0.1);
  assert.deepEqual(
    op.freezes!.map((f) => [f.host, f.requestSkewMs]),
    [
      ['h1', 0.1],
      ['h2', 0],
      ['h3', 0],
    ],
  );
});

test('a host that missed the instant: the hosts that made it thaw, a later cut with twice the margin', async () => {
  const fc = three();
  let misses = 1;
  const op = await checkpointCluster(
    fc.context((host, op) =>
      host === 'h2' && op === 'freeze-many' && misses-- > 0 ? 'late' : undefined,
    ),
    { all: true, name: 's1', leaveRunning: true },
  );
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  assert.equal(op.cut!.attempts, 2);
  assert.equal(op.cut!.marginMs, 2 * CUT.floorMs);
  // (A request that fails by a fault is not in `calls`: h2's first one.)
  const steps = fc.calls.filter((c) => / (freeze-many|thaw) /.test(c));
  // First plan: h1 and h3 froze, h2 did not; they thaw; second plan: all three.
  assert.deepEqual(steps.slice(0, 4).sort(), [
    'h1 freeze-many a at',
    'h1 thaw a',
    'h3 freeze-many c at',
    'h3 thaw c',
  ]);
  assert.ok(steps.indexOf('h1 thaw a') > steps.indexOf('h1 freeze-many a at'));
  assert.deepEqual(steps.slice(4, 7).sort(), [
    'h1 freeze-many a at',
    'h2 freeze-many b at',
    'h3 freeze-many c at',
  ]);
  assert.equal(fc.dumps, 3);
});

test('a host that misses every plan: CUT_MISSED after CUT.attempts, every job thawed, nothing dumped', async () => {
  const fc = three();
  let asked = 0;
  const op = await checkpointCluster(
    fc.context((host, op) => {
      if (host === 'h3' && op === 'freeze-many') return (asked++, 'late');
    }),
    { all: true, name: 's1' },
  );
  assert.equal(op.state, 'failed');
  assert.equal(op.error!.code, ErrorCode.CutMissed);
  assert.match(op.error!.message, /the cut had passed on h3; every job was thawed where it was/);
  assert.equal(asked, CUT.attempts);
  assert.equal(fc.calls.filter((c) => c.startsWith('h1 freeze-many')).length, CUT.attempts);
  assert.equal(fc.dumps, 0);
  assert.deepEqual(
    fc.jobs.map((j) => j.state),
    ['running', 'running', 'running'],
  );
  assert.equal(await fc.sets.get('s1'), null);
});

test('an agent from before scheduled cuts (no `clock`): the cut is unscheduled, as before', async () => {
  const fc = three();
  const op = await checkpointCluster(
    fc.context((host, op) => (host === 'h3' && op === 'clock' ? 'unknown-op' : undefined)),
    { all: true, name: 's1', leaveRunning: true },
  );
  assert.equal(op.state, 'done', JSON.stringify(op.error));
  assert.equal(op.cut, null);
  assert.deepEqual(
    fc.calls.filter((c) => / freeze-many /.test(c)),
    ['h1 freeze-many a', 'h2 freeze-many b', 'h3 freeze-many c'],
  );
  for (const f of op.freezes!) assert.equal(f.cutAtMs, undefined);
  // No cut timer made the requests: no cut skew, only the frozen reports'.
  assert.equal(op.requestSkewMs, null);
  for (const f of op.freezes!) assert.equal(f.requestSkewMs, undefined);
  assert.equal(typeof op.freezeSkewMs, 'number');
});
