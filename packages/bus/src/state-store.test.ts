/** Tests for StateStore against a real nats-server 2.9.x on loopback: CAS, mutate, create, watch. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDroverError, type DroverError } from '@drover/common';
import { Bus } from './connection.js';
import { freePort, startTestNats, type TestNats } from './test-nats.js';
import { StateStore } from './state-store.js';

let nats: TestNats;
let bus: Bus;
let url: string;

before(async () => {
  nats = await startTestNats('state-test');
  bus = nats.bus;
  url = nats.url;
});

after(async () => {
  await nats?.stop();
});

test('get/put/update: a stale revision is FAILED_PRECONDITION with {key, revision}', async () => {
  const s = await StateStore.open<{ n: number }>(bus, { bucket: 'cas', timeoutMs: 1000 });
  assert.equal(await s.get('jobs.a'), null);
  const r1 = await s.put('jobs.a', { n: 1 });
  assert.deepEqual(await s.get('jobs.a'), { value: { n: 1 }, revision: r1 });
  const r2 = await s.update('jobs.a', { n: 2 }, r1);
  assert.ok(r2 > r1);
  await assert.rejects(s.update('jobs.a', { n: 3 }, r1), (e: unknown) => {
    assert.ok(isDroverError(e, 'FAILED_PRECONDITION'));
    assert.equal((e as DroverError).retryable, true);
    assert.deepEqual((e as DroverError).details, { key: 'jobs.a', revision: r1 });
    return true;
  });
  assert.deepEqual((await s.get('jobs.a'))?.value, { n: 2 });
  // A CAS delete with a stale revision is refused too.
  await assert.rejects(s.delete('jobs.a', r1), (e: unknown) =>
    isDroverError(e, 'FAILED_PRECONDITION'),
  );
  await s.delete('jobs.a', r2);
  assert.equal(await s.get('jobs.a'), null);
});

test('create refuses an existing key but succeeds after a delete', async () => {
  const s = await StateStore.open<string>(bus, { bucket: 'create' });
  await s.create('k', 'first');
  await assert.rejects(s.create('k', 'second'), (e: unknown) => isDroverError(e, 'ALREADY_EXISTS'));
  assert.equal((await s.get('k'))?.value, 'first');
  await s.delete('k');
  await s.create('k', 'third');
  assert.equal((await s.get('k'))?.value, 'third');
});

test('mutate: 20 concurrent increments on 5 connections end at 20', async () => {
  const buses = await Promise.all(
    [0, 1, 2, 3, 4].map((i) => Bus.connect({ servers: [url], name: `w${i}` })),
  );
  try {
    const stores = await Promise.all(
      buses.map((b) => StateStore.open<number>(b, { bucket: 'counter' })),
    );
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        stores[i % stores.length]!.mutate('c', (n) => (n ?? 0) + 1),
      ),
    );
    assert.equal((await stores[0]!.get('c'))?.value, 20);
    // null from fn deletes; mutate on an absent key with null is a no-op.
    assert.equal(await stores[0]!.mutate('c', () => null), null);
    assert.equal(await stores[0]!.get('c'), null);
    assert.equal(await stores[0]!.mutate('c', () => null), null);
    assert.deepEqual((await stores[0]!.mutate('c', (n) => (n ?? 100) + 1))?.value, 101);
  } finally {
    await Promise.all(buses.map((b) => b.close()));
  }
});

test('mutate gives up after its retries with a retryable FAILED_PRECONDITION', async () => {
  const s = await StateStore.open<number>(bus, { bucket: 'giveup' });
  await s.put('k', 0);
  // fn races a writer on every attempt, so every CAS is stale.
  let calls = 0;
  await assert.rejects(
    s.mutate(
      'k',
      (n) => {
        calls++;
        void s.put('k', -calls);
        return (n ?? 0) + 1;
      },
      { retries: 2 },
    ),
    (e: unknown) => isDroverError(e, 'FAILED_PRECONDITION') && (e as DroverError).retryable,
  );
  assert.equal(calls, 3);
});

test('keys are validated; keys() and list() see live keys only', async () => {
  const s = await StateStore.open<number>(bus, { bucket: 'list' });
  for (const bad of ['', '.a', 'a.', 'a..b', 'a b', 'a*', 'a>', 'ü']) {
    await assert.rejects(s.put(bad, 1), (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'), bad);
  }
  await assert.rejects(s.keys('a b'), (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'));
  await s.put('hosts.h1', 1);
  await s.put('hosts.h2', 2);
  await s.put('jobs.j1', 3);
  await s.delete('hosts.h2');
  assert.deepEqual((await s.keys()).sort(), ['hosts.h1', 'jobs.j1']);
  assert.deepEqual(await s.keys('hosts.*'), ['hosts.h1']);
  const all = await s.list();
  assert.deepEqual([...all.keys()].sort(), ['hosts.h1', 'jobs.j1']);
  assert.equal(all.get('jobs.j1')?.value, 3);
});

test('watch sees puts and deletes in order, and stops when asked', async () => {
  const s = await StateStore.open<number>(bus, { bucket: 'watch' });
  await s.put('old', 0);
  const seen: string[] = [];
  const stop = await s.watch((k, v) => seen.push(`${k}=${v === null ? 'deleted' : v}`));
  await s.put('a', 1);
  await s.put('b.c', 2);
  await s.delete('a');
  const until = Date.now() + 2000;
  while (seen.length < 3 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(seen, ['a=1', 'b.c=2', 'a=deleted']);
  stop();
  await s.put('a', 9);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(seen.length, 3);
  // includeExisting delivers current values first.
  const initial: string[] = [];
  const stop2 = await s.watch((k, v) => initial.push(`${k}=${v}`), { includeExisting: true });
  const until2 = Date.now() + 2000;
  while (initial.length < 3 && Date.now() < until2) await new Promise((r) => setTimeout(r, 20));
  stop2();
  assert.deepEqual(initial.sort(), ['a=9', 'b.c=2', 'old=0']);
});

test('a dead server is UNAVAILABLE (retryable) once retryForMs has passed, not a hang', async () => {
  const port = await freePort();
  const d = mkdtempSync(join(tmpdir(), 'drover-state-dead-'));
  const srv = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', d], {
    stdio: 'ignore',
  });
  let killed = false;
  try {
    let b: Bus | undefined;
    for (let i = 0; !b; i++) {
      b = await Bus.connect({ servers: [`nats://127.0.0.1:${port}`], name: 'dead' }).catch(
        (err: unknown) => {
          if (i > 100) throw err;
          return new Promise<undefined>((r) => setTimeout(() => r(undefined), 50));
        },
      );
    }
    const s = await StateStore.open<number>(b, {
      bucket: 'dead',
      timeoutMs: 300,
      retryForMs: 1000,
    });
    process.kill(srv.pid!, 'SIGKILL');
    killed = true;
    const t0 = Date.now();
    await assert.rejects(
      s.put('k', 1),
      (e: unknown) => isDroverError(e, 'UNAVAILABLE') && (e as DroverError).retryable,
    );
    const took = Date.now() - t0;
    assert.ok(took >= 700 && took < 3000, `gave up after ${took} ms`);
    await b.close();
  } finally {
    if (!killed) process.kill(srv.pid!, 'SIGKILL');
    rmSync(d, { recursive: true, force: true });
  }
});
