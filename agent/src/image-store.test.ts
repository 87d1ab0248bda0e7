/** Images finished later: sealed a few at a time, reads first; a cut's image taken by a move. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ImageInfo } from '@drover/protocol';
import { ImageStore, SEALS_AT_ONCE, Turns, type ImageManifest } from './image-store.js';

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

test('images are sealed SEALS_AT_ONCE at a time; a read of a waiting one goes first', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'drover-images-'));
  try {
    const images = new ImageStore(stateDir);
    const started: string[] = [];
    const g = gated(started);
    const n = SEALS_AT_ONCE + 3;
    for (let i = 0; i < n; i++) {
      const info = { imageId: `img-${i}`, jobId: `job-${i}` } as ImageInfo;
      images.finishLater(info, g.work(`img-${i}`), true);
    }
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

/** An image of a cut (not sealed on its own) whose plaintext records its discard. */
function cutImage(images: ImageStore, g: ReturnType<typeof gated>, id: string, gone: string[]) {
  const info = { imageId: id, jobId: `job-${id}` } as ImageInfo;
  images.finishLater(info, g.work(id), false, {
    manifest: { ...info } as ImageManifest,
    plainDir: `/scratch/${id}`,
    discard: async () => void gone.push(id),
  });
}

/** An image store that never touches a disk here, with what its seals started and what went. */
function cutStore() {
  const started: string[] = [];
  return {
    images: new ImageStore(join(tmpdir(), 'drover-images-never-made')),
    started,
    gone: [] as string[],
    g: gated(started),
  };
}

test("a cut's image waits for a read; a move takes its plaintext instead, and reads wait for the move", async () => {
  const { images, started, gone, g } = cutStore();
  cutImage(images, g, 'img-a', gone);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(started, [], 'not sealed on its own');
  const taken = images.takeUnsealed('img-a');
  assert.ok(taken);
  assert.equal(taken.plainDir, '/scratch/img-a');
  assert.equal(images.takeUnsealed('img-a'), null, 'taken once');
  let read: 'waiting' | 'done' = 'waiting';
  const reading = images.finished('img-a').then(() => (read = 'done'));
  await new Promise((r) => setImmediate(r));
  assert.equal(read, 'waiting', 'a read waits for the move');
  await taken.stored();
  await reading;
  assert.deepEqual(started, [], 'the seal it waited for is never made');
  assert.deepEqual(gone, ['img-a'], 'its plaintext went');
  assert.equal(await images.info('img-a'), null, 'the image is gone');
  assert.equal(images.takeUnsealed('img-a'), null);
});

test('an image given back by a failed move is sealed when read; one being sealed is not taken', async () => {
  const { images, started, gone, g } = cutStore();
  cutImage(images, g, 'img-b', gone);
  const taken = images.takeUnsealed('img-b')!;
  const reading = images.finished('img-b');
  taken.giveBack();
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(started, ['img-b'], 'the waiting read has it sealed');
  assert.equal(images.takeUnsealed('img-b'), null, 'a seal under way is not taken');
  await g.release('img-b');
  await reading;
  assert.deepEqual(gone, [], "its plaintext is the seal's");
});

test('a waiting image removed is never sealed: its plaintext goes', async () => {
  const { images, started, gone, g } = cutStore();
  cutImage(images, g, 'img-c', gone);
  assert.equal(await images.remove('img-c'), true);
  assert.deepEqual(started, []);
  assert.deepEqual(gone, ['img-c']);
  assert.equal(await images.info('img-c'), null);
});

test('a job thawed by itself has its waiting images sealed; one a move holds is left to it', async () => {
  const { images, started, gone, g } = cutStore();
  cutImage(images, g, 'img-d', gone);
  cutImage(images, g, 'img-e', gone);
  const held = images.takeUnsealed('img-e')!;
  images.startFinishing('job-img-d');
  images.startFinishing('job-img-e');
  assert.deepEqual(started, ['img-d']);
  await g.release('img-d');
  await held.stored();
  assert.deepEqual(gone, ['img-e']);
});
