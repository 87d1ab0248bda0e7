import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDroverError } from '@drover/common';
import { detectCgroupLayout } from './hierarchy.js';
import { JobCgroup } from './job-cgroup.js';
import {
  cleanupTestCgroups,
  removeTempDir,
  startCounter,
  tempDir,
  testParent,
} from './fixtures.js';

const layout = detectCgroupLayout();
const parent = testParent();
const pids: number[] = [];
let tmp = '';

before(async () => {
  tmp = await tempDir();
});
after(async () => {
  await cleanupTestCgroups(layout, parent, pids);
  await removeTempDir(tmp);
});

test('create puts the job under <hierarchy>/<parent>/<jobId> and is idempotent', async () => {
  const cg = await JobCgroup.create({ jobId: 'idem', parent, layout });
  assert.ok(cg.paths.all.length >= 1);
  for (const dir of cg.paths.all) {
    assert.ok(existsSync(join(dir, 'cgroup.procs')), dir);
    assert.ok(dir.endsWith(`/${parent}/idem`), dir);
  }
  if (layout.v2 !== null) assert.equal(cg.paths.all[0], join(layout.v2, parent, 'idem'));
  assert.equal(cg.paths.v1Freezer !== null, layout.freezer === 'v1');
  assert.equal(cg.paths.v1Memory !== null, layout.memory === 'v1');
  const again = await JobCgroup.create({ jobId: 'idem', parent, layout });
  assert.deepEqual(again.paths, cg.paths);
  await cg.destroy();
});

test('addProcess puts a running counter in every hierarchy; pids lists it', async () => {
  const counter = await startCounter(join(tmp, 'add'));
  pids.push(counter.pid);
  const cg = await JobCgroup.create({ jobId: 'add', parent, layout });
  await cg.addProcess(counter.pid);
  for (const dir of cg.paths.all) {
    const listed = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').map(Number);
    assert.ok(listed.includes(counter.pid), `${counter.pid} not in ${dir}`);
  }
  assert.ok((await cg.pids()).includes(counter.pid));
  // Children forked after joining are members too (the counter forks a sleep every few ms; a
  // loaded machine may catch it between two, so look for a while).
  let members = await cg.pids();
  for (let i = 0; i < 100 && members.length < 2; i++) {
    await sleep(30);
    members = await cg.pids();
  }
  assert.ok(members.length >= 2, 'sleep children of the counter are not in the job');
  await cg.destroy();
});

test('addProcess of a PID that does not exist fails with NOT_FOUND', async () => {
  const cg = await JobCgroup.create({ jobId: 'nopid', parent, layout });
  await assert.rejects(cg.addProcess(2 ** 22 + 7), (e) => isDroverError(e, 'NOT_FOUND'));
  await assert.rejects(cg.addProcess(-1), (e) => isDroverError(e, 'INVALID_ARGUMENT'));
  await cg.destroy();
});

test('memory limit is written and read back', { skip: layout.memory === null }, async () => {
  const mib64 = 64 * 1024 * 1024;
  const cg = await JobCgroup.create({ jobId: 'mem', parent, layout, memoryLimitBytes: mib64 });
  assert.equal(await cg.memoryLimit(), mib64);
  const file = layout.memory === 'v2' ? 'memory.max' : 'memory.limit_in_bytes';
  assert.equal(readFileSync(join(cg.paths.memory ?? '', file), 'utf8').trim(), String(mib64));
  await cg.setMemoryLimit(100_000_001);
  const rounded = await cg.memoryLimit();
  assert.ok(
    rounded !== null && rounded <= 100_000_001 && rounded > 100_000_001 - 65536,
    `${rounded}`,
  );
  await cg.setMemoryLimit(null);
  assert.equal(await cg.memoryLimit(), null);
  await assert.rejects(cg.setMemoryLimit(0), (e) => isDroverError(e, 'INVALID_ARGUMENT'));

  const counter = await startCounter(join(tmp, 'mem'));
  pids.push(counter.pid);
  await cg.addProcess(counter.pid);
  await sleep(200);
  const usage = await cg.memoryUsage();
  assert.ok(Number.isInteger(usage) && usage > 0, `usage ${usage}`);
  await cg.destroy();
});

test('invalid job ids are rejected with INVALID_ARGUMENT and create nothing', async () => {
  const bad = [
    '',
    '..',
    '.',
    '../escape',
    'a/b',
    '/abs',
    '.hidden',
    '-x',
    'sp ace',
    'x'.repeat(129),
    'a\nb',
  ];
  for (const jobId of bad) {
    await assert.rejects(JobCgroup.create({ jobId, parent, layout }), (e) =>
      isDroverError(e, 'INVALID_ARGUMENT'),
    );
    await assert.rejects(JobCgroup.open({ jobId, parent, layout }), (e) =>
      isDroverError(e, 'INVALID_ARGUMENT'),
    );
  }
  await assert.rejects(JobCgroup.create({ jobId: 'ok', parent: '../up', layout }), (e) =>
    isDroverError(e, 'INVALID_ARGUMENT'),
  );
  assert.ok(!existsSync(join(layout.v2 ?? layout.v1Freezer ?? '', 'escape')));
  // A name that collides with a control file of the parent cgroup is not a cgroup.
  await assert.rejects(JobCgroup.create({ jobId: 'cgroup.procs', parent, layout }), (e) =>
    isDroverError(e, 'INVALID_ARGUMENT'),
  );
});

test('open finds an existing job and refuses a missing one with NOT_FOUND', async () => {
  await assert.rejects(JobCgroup.open({ jobId: 'missing', parent, layout }), (e) =>
    isDroverError(e, 'NOT_FOUND'),
  );
  const cg = await JobCgroup.create({ jobId: 'opened', parent, layout });
  const same = await JobCgroup.open({ jobId: 'opened', parent, layout });
  assert.deepEqual(same.paths, cg.paths);
  await cg.destroy();
  await assert.rejects(JobCgroup.open({ jobId: 'opened', parent, layout }), (e) =>
    isDroverError(e, 'NOT_FOUND'),
  );
});

test('destroy kills the job by SIGKILL and leaves no directory behind', async () => {
  const counter = await startCounter(join(tmp, 'destroy'));
  pids.push(counter.pid);
  const cg = await JobCgroup.create({ jobId: 'destroy', parent, layout });
  await cg.addProcess(counter.pid);
  await sleep(100);
  await cg.destroy({ killTimeoutMs: 3000 });
  assert.equal(await counter.exited, 'SIGKILL');
  for (const dir of cg.paths.all) assert.ok(!existsSync(dir), `${dir} left behind`);
  // Destroying again is harmless.
  await cg.destroy();
});

test('destroy removes nested child cgroups first', async () => {
  const cg = await JobCgroup.create({ jobId: 'nested', parent, layout });
  const inner = await JobCgroup.create({ jobId: 'inner', parent: `${parent}/nested`, layout });
  const counter = await startCounter(join(tmp, 'nested'));
  pids.push(counter.pid);
  await inner.addProcess(counter.pid);
  assert.ok((await cg.pids()).includes(counter.pid), 'pids() misses nested cgroups');
  await cg.destroy({ killTimeoutMs: 3000 });
  assert.equal(await counter.exited, 'SIGKILL');
  for (const dir of [...cg.paths.all, ...inner.paths.all])
    assert.ok(!existsSync(dir), `${dir} left behind`);
});
