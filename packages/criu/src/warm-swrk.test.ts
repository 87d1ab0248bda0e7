import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Criu } from './criu.js';
import { SwrkSession } from './swrk.js';
import { WarmSwrk, type WarmProcess } from './warm-swrk.js';

class FakeProcess implements WarmProcess {
  static next = 1;
  readonly pid = FakeProcess.next++;
  alive = true;
  killed = 0;
  async kill(): Promise<void> {
    this.killed++;
    this.alive = false;
  }
}

function stock(options: { idleMs?: number; max?: number; failAfter?: number } = {}): {
  warm: WarmSwrk<FakeProcess>;
  made: FakeProcess[];
} {
  const made: FakeProcess[] = [];
  const warm = new WarmSwrk(() => {
    if (options.failAfter !== undefined && made.length >= options.failAfter) {
      throw new Error('spawn failed');
    }
    const p = new FakeProcess();
    made.push(p);
    return p;
  }, options);
  return { warm, made };
}

test('fill starts up to n, take hands each out once, in order', async () => {
  const { warm, made } = stock();
  assert.equal(warm.fill(3), 3);
  assert.equal(warm.fill(3), 0, 'already full');
  assert.equal(warm.size, 3);
  assert.equal(warm.take(), made[0]);
  assert.equal(warm.take(), made[1]);
  assert.equal(warm.take(), made[2]);
  assert.equal(warm.take(), null);
  await warm.drain();
  assert.deepEqual(
    made.map((p) => p.killed),
    [0, 0, 0],
    'taken processes are the taker’s to close',
  );
});

test('drain kills every unused process', async () => {
  const { warm, made } = stock();
  warm.fill(4);
  warm.take();
  await warm.drain();
  assert.equal(warm.size, 0);
  assert.deepEqual(
    made.map((p) => p.killed),
    [0, 1, 1, 1],
  );
});

test('a process that died while waiting is not handed out, and is ended', async () => {
  const { warm, made } = stock();
  warm.fill(2);
  made[0]!.alive = false;
  assert.equal(warm.take(), made[1]);
  assert.equal(made[0]!.killed, 1);
  await warm.drain();
});

test('fill stops at max and at the first failed start', async () => {
  const capped = stock({ max: 2 });
  assert.equal(capped.warm.fill(5), 2);
  await capped.warm.drain();
  const failing = stock({ failAfter: 1 });
  assert.equal(failing.warm.fill(3), 1);
  assert.equal(failing.warm.size, 1);
  await failing.warm.drain();
});

test('unused processes are ended after idleMs', async () => {
  const { warm, made } = stock({ idleMs: 20 });
  warm.fill(2);
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(warm.size, 0);
  assert.deepEqual(
    made.map((p) => p.killed),
    [1, 1],
  );
});

test('real processes: drain kills and reaps every waiting child; a taken one is ended by its operation', async (t) => {
  // A stand-in for criu that never answers: `criu swrk 3` becomes a long sleep.
  const dir = mkdtempSync(join(tmpdir(), 'warm-swrk-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const fakeCriu = join(dir, 'criu');
  writeFileSync(fakeCriu, '#!/bin/sh\nexec sleep 600\n');
  chmodSync(fakeCriu, 0o755);
  const criu = new Criu({ criuPath: fakeCriu });
  const pids: number[] = [];
  const warm = new WarmSwrk(() => {
    const s = SwrkSession.start({ criuPath: fakeCriu });
    pids.push(s.pid!);
    return s;
  });
  assert.equal(warm.fill(3), 3);
  await warm.drain();
  assert.equal(warm.size, 0);
  const own = criu.warm();
  own.fill(1);
  const taken = own.take()!;
  assert.ok(taken instanceof SwrkSession && taken.alive);
  pids.push(taken.pid!);
  // The taken one goes with the operation that took it: a dump with an env cannot use it and
  // ends it before starting its own (which, never answered here, is killed by the test).
  let fresh: SwrkSession | null = null;
  const dump = criu.dump(
    { pid: 1, imagesDir: dir },
    { session: taken, env: { ...process.env }, onSession: (s) => (fresh = s) },
  );
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(taken.alive, false);
  assert.ok(fresh !== null);
  await (fresh as SwrkSession).kill();
  await assert.rejects(dump);
  for (const pid of pids) assert.throws(() => process.kill(pid, 0), /ESRCH/, `pid ${pid} reaped`);
});
