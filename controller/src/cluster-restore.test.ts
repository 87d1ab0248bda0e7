/**
 * Unit tests of the restore state machine over a faked layer below (fake-cluster.ts): placement,
 * the whole cut restored frozen before any job runs, rollback. End to end:
 * test/src/e2e/cluster-checkpoint.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import { checkpointCluster } from './cluster-checkpoint.js';
import { restoreCluster } from './cluster-restore.js';
import { phasesOf, three } from './fake-cluster.js';

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
