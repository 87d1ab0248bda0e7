/** Tests for Lease and LeaseKeeper against a real nats-server on loopback. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError, type DroverError } from '@drover/common';
import { Lease, LeaseKeeper, type LeaseRecord } from './lease.js';
import { StateStore } from './state-store.js';
import { startTestNats, type TestNats } from './test-nats.js';

let nats: TestNats;
let store: StateStore<LeaseRecord>;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

before(async () => {
  nats = await startTestNats('lease-test');
  store = await StateStore.open<LeaseRecord>(nats.bus, { bucket: 'leases', timeoutMs: 1000 });
});

after(async () => {
  await nats?.stop();
});

const held = (e: unknown): boolean =>
  isDroverError(e, 'FAILED_PRECONDITION') && (e as DroverError).retryable;

test('a held lease refuses a second holder; release frees it', async () => {
  const a = await Lease.acquire(store, 'leader.r', 'ctl-a', 5000);
  assert.ok(a.isHeld());
  await assert.rejects(Lease.acquire(store, 'leader.r', 'ctl-b', 5000), (e: unknown) => {
    assert.ok(held(e));
    assert.equal((e as DroverError).details.holder, 'ctl-a');
    return true;
  });
  await a.release();
  assert.equal(a.isHeld(), false);
  assert.equal(await store.get('leader.r'), null);
  const b = await Lease.acquire(store, 'leader.r', 'ctl-b', 5000);
  assert.ok(b.isHeld());
  await b.release();
});

test('an expired lease is taken over; the old holder cannot renew it', async () => {
  const a = await Lease.acquire(store, 'leader.x', 'ctl-a', 300);
  await sleep(350);
  assert.equal(a.isHeld(), false);
  const b = await Lease.acquire(store, 'leader.x', 'ctl-b', 5000);
  assert.equal((await store.get('leader.x'))?.value.holder, 'ctl-b');
  await assert.rejects(a.renew(), (e: unknown) => isDroverError(e, 'FAILED_PRECONDITION'));
  // A's release must not free B's lease.
  await a.release();
  assert.equal((await store.get('leader.x'))?.value.holder, 'ctl-b');
  await b.release();
});

test('renew extends the lease past its first expiry', async () => {
  const a = await Lease.acquire(store, 'leader.n', 'ctl-a', 400);
  const first = (await store.get('leader.n'))!.value.expiresAt;
  await sleep(250);
  await a.renew();
  const second = (await store.get('leader.n'))!.value.expiresAt;
  assert.ok(second >= first + 200, `${second} vs ${first}`);
  await sleep(250); // past the first expiry, inside the renewed one
  assert.ok(a.isHeld());
  await assert.rejects(Lease.acquire(store, 'leader.n', 'ctl-b', 400), held);
  await a.release();
});

test('maxClockSkewMs shortens what the holder trusts', async () => {
  const a = await Lease.acquire(store, 'leader.s', 'ctl-a', 400, { maxClockSkewMs: 300 });
  await sleep(150);
  assert.equal(a.isHeld(), false);
  await assert.rejects(
    Lease.acquire(store, 'leader.s', 'ctl-b', 400, { maxClockSkewMs: 500 }),
    (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'),
  );
  await a.release();
});

test('a LeaseKeeper keeps the lease alive, then reports loss when it is stolen after expiry', async () => {
  const a = await Lease.acquire(store, 'leader.k', 'ctl-a', 300);
  const losses: DroverError[] = [];
  const keeper = new LeaseKeeper(a, { onLost: (e) => losses.push(e) }).start();
  await sleep(800); // well past one ttl: only renewals keep it
  assert.ok(a.isHeld());
  await assert.rejects(Lease.acquire(store, 'leader.k', 'ctl-b', 300), held);
  assert.equal(losses.length, 0);
  // Simulate a holder that stalls (no renewals) past expiry, while B takes over.
  keeper.stop();
  await sleep(350);
  const b = await Lease.acquire(store, 'leader.k', 'ctl-b', 5000);
  const keeper2 = new LeaseKeeper(a, { onLost: (e) => losses.push(e) }).start();
  const until = Date.now() + 2000;
  while (losses.length === 0 && Date.now() < until) await sleep(20);
  keeper2.stop();
  assert.equal(losses.length, 1);
  assert.ok(isDroverError(losses[0], 'FAILED_PRECONDITION'));
  assert.equal(losses[0]?.retryable, false);
  assert.equal(a.isHeld(), false);
  await b.release();
});

test('a LeaseKeeper rides over a NATS outage longer than the TTL: nobody could take the lease meanwhile', async () => {
  const own = await startTestNats('lease-outage');
  try {
    const s = await StateStore.open<LeaseRecord>(own.bus, {
      bucket: 'leases',
      timeoutMs: 300,
      retryForMs: 500,
    });
    const a = await Lease.acquire(s, 'leader', 'ctl-a', 600);
    const losses: DroverError[] = [];
    const keeper = new LeaseKeeper(a, { onLost: (e) => losses.push(e), maxOutageMs: 5000 }).start();
    await own.crash(1500); // the server is gone for 2.5 TTLs
    const until = Date.now() + 5000;
    while (!a.isHeld() && Date.now() < until) await sleep(50);
    await sleep(700); // renewals go on after the outage
    keeper.stop();
    assert.deepEqual(losses, []);
    assert.ok(a.isHeld(), 'the renewal after the outage did not succeed');
    assert.equal((await s.get('leader'))?.value.holder, 'ctl-a');
    // An outage longer than maxOutageMs is a loss.
    const lost = new Promise<DroverError>((resolve) => {
      new LeaseKeeper(a, { onLost: resolve, maxOutageMs: 800 }).start();
    });
    await own.crash(3000);
    const e = await lost;
    assert.ok(isDroverError(e, 'UNAVAILABLE'), String(e));
  } finally {
    await own.stop();
  }
});
