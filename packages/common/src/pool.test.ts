import { test } from 'node:test';
import assert from 'node:assert/strict';
import { forEachLimit, mapLimit, runGroups, settleAll } from './pool.js';

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 1));

test('mapLimit: at most `limit` in flight, results in order', async () => {
  let inFlight = 0;
  let most = 0;
  const out = await mapLimit([1, 2, 3, 4, 5, 6, 7], 3, async (x) => {
    most = Math.max(most, ++inFlight);
    await tick();
    inFlight--;
    return x * 10;
  });
  assert.deepEqual(out, [10, 20, 30, 40, 50, 60, 70]);
  assert.equal(most, 3);
});

test('forEachLimit: after a failure nothing new starts; running calls finish; first error thrown', async () => {
  const started: number[] = [];
  let finished = 0;
  await assert.rejects(
    forEachLimit([1, 2, 3, 4, 5, 6], 2, async (x) => {
      started.push(x);
      await tick();
      finished++;
      if (x === 1) throw new Error('first');
      if (x === 2) throw new Error('second');
    }),
    /first/,
  );
  assert.deepEqual(started, [1, 2]);
  assert.equal(finished, 2);
});

test('runGroups: each group its own limit (1 when it names none), all groups at once', async () => {
  const inFlight = new Map<string, number>();
  const most = new Map<string, number>();
  const groups = [
    ['a', 'a', 'a', 'a'],
    ['b', 'b', 'b'],
  ];
  await runGroups(
    groups,
    (g) => (g[0] === 'a' ? 2 : undefined),
    async (x) => {
      inFlight.set(x, (inFlight.get(x) ?? 0) + 1);
      most.set(x, Math.max(most.get(x) ?? 0, inFlight.get(x)!));
      await tick();
      inFlight.set(x, inFlight.get(x)! - 1);
    },
  );
  assert.deepEqual([most.get('a'), most.get('b')], [2, 1]);
});

test('settleAll: results in order; a failure is thrown only once every call has settled', async () => {
  assert.deepEqual(await settleAll([Promise.resolve(1), Promise.resolve('a')]), [1, 'a']);
  let slowDone = false;
  const slow = (async () => {
    await tick();
    await tick();
    slowDone = true;
  })();
  await assert.rejects(
    settleAll([Promise.reject(new Error('first')), slow, Promise.reject(new Error('second'))]),
    /first/,
  );
  assert.equal(slowDone, true);
});
