/** Images finished later: sealed a few at a time, in the order their jobs ran again, reads first. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ImageInfo } from '@drover/protocol';
import { ImageStore, SEALS_AT_ONCE, Turns } from './image-store.js';

/** Work that runs until `release(name)`, recording when it started. */
function gated(started: string[]) {
  const gates = new Map<string, () => void>();
  return {
    work: (name: string) => () =>
      new Promise<void>((resolve) => {
        started.push(name);
        gates.set(name, resolve);
      }),
    release: async (name: string) => {
      gates.get(name)!();
      // Let the finished turn hand its place on.
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    },
  };
}

test('turns: at most `most` at once, in order taken; urgent and hurried work go first', async () => {
  const started: string[] = [];
  const g = gated(started);
  const turns = new Turns(2);
  const a = turns.take(g.work('a'));
  turns.take(g.work('b'));
  turns.take(g.work('c'));
  const d = turns.take(g.work('d'));
  turns.take(g.work('e'), true);
  assert.deepEqual(started, ['a', 'b']);
  // The line is now e, c, d; d is wanted now.
  d.hurry();
  await g.release('a');
  await a.done;
  assert.deepEqual(started, ['a', 'b', 'd']);
  await g.release('b');
  assert.deepEqual(started, ['a', 'b', 'd', 'e']);
  await g.release('e');
  await g.release('d');
  assert.deepEqual(started, ['a', 'b', 'd', 'e', 'c']);
  await g.release('c');
});

test('turns: a failed work rejects its own outcome and hands its turn on', async () => {
  const turns = new Turns(1);
  const bad = turns.take(() => Promise.reject(new Error('seal failed')));
  const good = turns.take(() => Promise.resolve());
  await assert.rejects(bad.done, /seal failed/);
  await good.done;
});

test('images of thawed jobs are sealed SEALS_AT_ONCE at a time; a read of a waiting one goes first', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'drover-images-'));
  try {
    const images = new ImageStore(stateDir);
    const started: string[] = [];
    const g = gated(started);
    const n = SEALS_AT_ONCE + 3;
    for (let i = 0; i < n; i++) {
      const info = { imageId: `img-${i}`, jobId: `job-${i}` } as ImageInfo;
      images.finishLater(info, g.work(`img-${i}`), false);
    }
    assert.deepEqual(started, [], 'nothing is sealed while the jobs are frozen');
    for (let i = 0; i < n; i++) images.startFinishing(`job-${i}`);
    const first = Array.from({ length: SEALS_AT_ONCE }, (_, i) => `img-${i}`);
    assert.deepEqual(started, first);
    // The last image is read (an upload asks for it): it is sealed next.
    const read = images.finished(`img-${n - 1}`);
    await g.release('img-0');
    assert.deepEqual(started, [...first, `img-${n - 1}`]);
    await g.release(`img-${n - 1}`);
    await read;
    for (let i = 1; i < n - 1; i++) await g.release(`img-${i}`);
    assert.equal(started.length, n);
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }
});
