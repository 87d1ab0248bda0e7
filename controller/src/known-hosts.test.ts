/** Tests of a fresh controller's readiness: it waits for every remembered host, or the timeout. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nullLogger } from '@drover/common';
import { FORGET_AFTER_MS, KnownHosts, type KnownHost } from './known-hosts.js';
import { MemRecords } from './mem-records.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function remembered(hosts: Record<string, number>): Promise<MemRecords<KnownHost>> {
  const store = new MemRecords<KnownHost>();
  for (const [h, ago] of Object.entries(hosts)) {
    await store.put(h, { seenAt: new Date(Date.now() - ago).toISOString() });
  }
  return store;
}

test('ready once every remembered host has been heard from; hosts seen first are written down', async () => {
  const store = await remembered({ h1: 1000, h2: 1000 });
  const k = await KnownHosts.load(store, 60_000, nullLogger);
  let ready = false;
  void k.whenReady().then(() => (ready = true));
  assert.deepEqual(k.missing(), ['h1', 'h2']);
  k.heardFrom('h1');
  await sleep(10);
  assert.equal(ready, false, 'ready before h2 was heard from');
  k.heardFrom('h3'); // a new host: remembered from now on
  k.heardFrom('h2');
  await sleep(10);
  assert.equal(ready, true);
  assert.equal(k.has('h3'), true);
  await sleep(10);
  assert.ok(await store.get('h3'), 'a new host was not written down');
  k.stop();
});

test('a silent remembered host makes it wait the timeout, no longer; long-gone hosts are forgotten', async () => {
  const store = await remembered({ h1: 1000, gone: FORGET_AFTER_MS + 1000 });
  const k = await KnownHosts.load(store, 200, nullLogger);
  assert.deepEqual(k.missing(), ['h1'], 'a host silent for a week is still waited for');
  assert.equal(await store.get('gone'), null);
  const t0 = Date.now();
  const keep = setInterval(() => {}, 50); // the controller's own timer does not hold a process open
  await k.whenReady();
  clearInterval(keep);
  assert.ok(Date.now() - t0 >= 150, 'ready before the timeout with a host still silent');
  assert.equal(k.has('h1'), true, 'a silent host is still one the cluster has');
  k.stop();
});

test('nothing remembered (a new cluster): ready at once', async () => {
  const k = await KnownHosts.load(new MemRecords<KnownHost>(), 60_000, nullLogger);
  assert.equal(k.ready, true);
  await k.whenReady();
});
