/** Unit tests of the image-set catalogue (fake-cluster.ts): retention. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkpointCluster } from './cluster-checkpoint.js';
import { three } from './fake-cluster.js';

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
