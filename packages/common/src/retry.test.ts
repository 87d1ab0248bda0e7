import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoff, retry } from './retry.js';

test('retry: tries again until it succeeds, telling each retry', async () => {
  const seen: number[] = [];
  const r = await retry(
    async (n) => {
      if (n < 2) throw new Error(`try ${n}`);
      return 'ok';
    },
    { pauseMs: () => 1, onRetry: (_e, n) => void seen.push(n) },
  );
  assert.equal(r, 'ok');
  assert.deepEqual(seen, [1, 2]);
});

test('retry: stops at an error not worth retrying, and after `tries`', async () => {
  let calls = 0;
  await assert.rejects(
    retry(
      async () => {
        calls++;
        throw new Error('fatal');
      },
      { pauseMs: () => 1, retryIf: () => false },
    ),
    /fatal/,
  );
  assert.equal(calls, 1);
  calls = 0;
  await assert.rejects(
    retry(
      async () => {
        calls++;
        throw new Error('again');
      },
      { pauseMs: () => 1, tries: 3 },
    ),
    /again/,
  );
  assert.equal(calls, 3);
});

test('retry: does not start a try past `forMs`', async () => {
  let t = 0;
  let calls = 0;
  await assert.rejects(
    retry(
      async () => {
        calls++;
        t += 100;
        throw new Error('slow');
      },
      { pauseMs: () => 1, forMs: 250, now: () => t },
    ),
    /slow/,
  );
  assert.equal(calls, 3);
});

test('backoff: doubles up to the maximum; jitter stays within half of it', () => {
  const b = backoff(250, 5000);
  assert.deepEqual([1, 2, 3, 5, 6, 9].map(b), [250, 500, 1000, 4000, 5000, 5000]);
  const j = backoff(100, 100, { jitter: true });
  for (let i = 0; i < 20; i++) {
    const ms = j(1);
    assert.ok(ms >= 50 && ms < 100, String(ms));
  }
});
