/** Unit tests of the dumps readied before a cluster's cut (prepared-dumps.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { JobCgroup } from '@drover/cgroup';
import type { JobDumpPlan } from './job-image.js';
import type { JobRecord } from './job-store.js';
import { PreparedDumps, type PreparedDump } from './prepared-dumps.js';

const dump = (jobId: string, rootPid: number): PreparedDump => ({
  jobId,
  rootPid,
  rootStartTicks: 7,
  dir: `/images/img-${jobId}`,
  cg: {} as JobCgroup,
  plan: { mounts: [], externals: [], shellJob: false } as unknown as JobDumpPlan,
});
const job = (id: string, rootPid: number, rootStartTicks = 7): JobRecord =>
  ({ id, rootPid, rootStartTicks }) as JobRecord;

test('a dump taken once, with its plan when the root process is the same', () => {
  const dropped: string[] = [];
  const p = new PreparedDumps(async (id) => dropped.push(id));
  p.add('img-a', dump('a', 100));
  p.add('img-b', dump('b', 200));
  p.add('img-c', dump('c', 300));
  assert.deepEqual(p.take('img-a', job('a', 100)), { dump: dump('a', 100), fits: true });
  assert.equal(p.take('img-a', job('a', 100)), null, 'taken once');
  // The job's root changed since (a restart): its directory still, not its plan.
  assert.equal(p.take('img-b', job('b', 201))?.fits, false);
  assert.equal(p.take('img-c', job('c', 300, 8))?.fits, false);
  assert.equal(p.take('img-x', job('x', 1)), null);
  assert.deepEqual(dropped, []);
});

test('what the cut did not take goes with its directory: at a drain, or after its time', async () => {
  const dropped: string[] = [];
  const p = new PreparedDumps(async (id) => void dropped.push(id), 30);
  p.add('img-a', dump('a', 100));
  p.add('img-b', dump('b', 200));
  p.take('img-a', job('a', 100));
  await p.drain();
  assert.deepEqual(dropped, ['img-b']);
  assert.equal(p.size, 0);
  p.add('img-c', dump('c', 300));
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(dropped, ['img-b', 'img-c']);
  assert.equal(p.take('img-c', job('c', 300)), null);
});
