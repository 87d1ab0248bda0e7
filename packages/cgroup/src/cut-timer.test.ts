import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SchedPolicy, threadScheduling } from '@drover/native';
import { cutTimerThread, prepareCutTimer, timedCut, type TimedCut } from './cut-timer.js';

const tmp = mkdtempSync(join(tmpdir(), 'drover-cut-timer-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A cut of plain files (no cgroups): written at the instant, "frozen" once they read 1. */
function fileCut(name: string, inMs: number): TimedCut {
  const files = [1, 2].map((n) => join(tmp, `${name}-${n}`));
  for (const f of files) writeFileSync(f, '0');
  return {
    atMs: now() + inMs,
    lateMs: 2,
    targets: files.map((f) => ({ write: f, value: '1', watch: f, frozen: '^1$' })),
    watchMs: 50,
  };
}

function now(): number {
  return performance.timeOrigin + performance.now();
}

/** The cut timer thread's policy now. */
function policyNow(): { policy: number; priority: number } | null {
  const t = cutTimerThread();
  assert.ok(t, 'the cut timer has not said its TID');
  return threadScheduling(t.pid, t.tid);
}

const root = process.getuid?.() === 0;

test(
  'the cut timer runs SCHED_FIFO at its priority while a cut is armed, the normal policy after',
  { skip: !root && 'SCHED_FIFO needs CAP_SYS_NICE (run as root)' },
  async () => {
    await prepareCutTimer({ priority: 7 });
    assert.deepEqual(policyNow(), { policy: SchedPolicy.Other, priority: 0 }, 'before any cut');
    const cut = fileCut('rt', 200);
    const made = timedCut(cut);
    assert.deepEqual(policyNow(), { policy: SchedPolicy.Fifo, priority: 7 }, 'while armed');
    const r = await made;
    assert.equal(r.kind, 'done');
    if (r.kind !== 'done') return;
    // Dropped once the writes were made (the thread says so before it answers).
    assert.deepEqual(policyNow(), { policy: SchedPolicy.Other, priority: 0 }, 'after the cut');
    assert.ok(r.issuedAtMs >= cut.atMs, `issued ${r.issuedAtMs - cut.atMs} ms early`);
    assert.equal(r.requestedAt.length, 2);
    assert.ok(r.issuedAtMs <= r.requestedAt[0]! && r.requestedAt[0]! <= r.requestedAt[1]!);
    for (const [i, t] of r.frozenAt.entries()) assert.ok(t !== null && t >= r.requestedAt[i]!);
    for (const t of cut.targets) assert.equal(readFileSync(t.write, 'utf8'), '1');
  },
);

test('a missed cut drops the priority too; priority 0 keeps the normal policy throughout', async () => {
  await prepareCutTimer({ priority: root ? 7 : 0 });
  const missed = await timedCut({ ...fileCut('missed', 0), atMs: now() - 50 });
  assert.equal(missed.kind, 'missed');
  assert.deepEqual(policyNow(), { policy: SchedPolicy.Other, priority: 0 }, 'after a miss');
  await prepareCutTimer({ priority: 0 });
  const made = timedCut(fileCut('normal', 100));
  assert.deepEqual(policyNow(), { policy: SchedPolicy.Other, priority: 0 }, 'priority 0, armed');
  assert.equal((await made).kind, 'done');
});
