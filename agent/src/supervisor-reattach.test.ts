/** Unit tests of `Supervisor.reattach` (supervisor.ts): the jobs an agent finds when it starts. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JobCgroup } from '@drover/cgroup';
import { nullLogger } from '@drover/common';
import { JobKind, JobState } from '@drover/protocol';
import { startTicks } from '@drover/native';
import { blankRecord, JobStore, type JobRecord } from './job-store.js';
import { Supervisor } from './supervisor.js';

let dir: string;
let child: ChildProcess;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'drover-reattach-'));
  child = spawn('sleep', ['60'], { stdio: 'ignore' });
  child.unref();
});
after(() => {
  child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

test('a live job frozen by a cut stays frozen, with a guard a dead agent left cleared', async () => {
  const store = new JobStore(dir);
  await store.init();
  const pid = child.pid!;
  const record = (id: string, state: JobState): JobRecord => ({
    ...blankRecord(id, 'h1', store.jobDir(id)),
    kind: JobKind.adopted,
    state,
    rootPid: pid,
    rootStartTicks: startTicks(pid),
    mainPid: pid,
    mainPidInside: pid,
  });
  await store.save(record('frozen-1', JobState.frozen));
  await store.save(record('running-1', JobState.running));
  const cleared: string[] = [];
  const thawed: string[] = [];
  const sup = new Supervisor({
    log: nullLogger,
    store,
    withJob: (_id, fn) => fn(),
    cgroupOf: async (r) =>
      ({
        forceClearGuard: async () => (cleared.push(r.id), true),
        thaw: async () => void thawed.push(r.id),
      }) as unknown as JobCgroup,
    event: () => undefined,
    checkpoint: () => Promise.reject(new Error('not here')),
  });
  try {
    await sup.reattach();
  } finally {
    await sup.close();
  }
  assert.deepEqual(cleared, ['frozen-1']);
  assert.deepEqual(thawed, [], 'the cut thaws it, not the restart');
  assert.equal((await store.load('frozen-1')).state, JobState.frozen);
  assert.equal((await store.load('running-1')).state, JobState.running);
});
