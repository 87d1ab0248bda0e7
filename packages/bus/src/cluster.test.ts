/**
 * The bus against a real 3-node JetStream cluster on loopback: state, leases, events and
 * requests ride over a crashed NATS server, including the leader of the state's stream; an
 * object uploaded with chunks in flight through any server of the cluster reads back whole.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Objm } from '@nats-io/obj';
import { isDroverError, type DroverError } from '@drover/common';
import type { Bus } from './connection.js';
import { EventLog } from './event-log.js';
import { Lease, LeaseKeeper, type LeaseRecord } from './lease.js';
import { ObjectFiles } from './object-files.js';
import { StateStore } from './state-store.js';
import { startTestNatsCluster, type TestNatsCluster } from './test-nats.js';

let cluster: TestNatsCluster;
let bus: Bus;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

before(async () => {
  cluster = await startTestNatsCluster('bus-cluster');
  bus = await cluster.connect('cluster-test', { requestTimeoutMs: 5000 });
});

after(async () => {
  await cluster?.stop();
});

/** Open an R3 bucket once the cluster has a meta leader (creating it fails until then). */
async function openR3<T>(bucket: string): Promise<StateStore<T>> {
  return StateStore.open<T>(bus, { bucket, replicas: 3, timeoutMs: 1000 });
}

/** The server that leads `stream`, by name (asked again while the cluster elects leaders). */
async function leaderOf(stream: string): Promise<string> {
  let last: unknown;
  for (let i = 0; i < 150; i++) {
    try {
      const jsm = await jetstreamManager(bus.nc, { timeout: 2000 });
      const leader = (await jsm.streams.info(stream)).cluster?.leader;
      if (leader) return leader;
    } catch (err) {
      last = err;
    }
    await sleep(200);
  }
  throw new Error(`${stream} has no leader: ${String(last)}`);
}

test('state, a lease and the event log survive the crash of the stream leader', async (t) => {
  const counters = await openR3<number>('cluster_state');
  const leases = await openR3<LeaseRecord>('cluster_leases');
  const events = await EventLog.open(bus, { stream: 'CLUSTER_EVENTS', replicas: 3 });
  const lease = await Lease.acquire(leases, 'leader', 'ctl-a', 3000);
  const losses: DroverError[] = [];
  const keeper = new LeaseKeeper(lease, { onLost: (e) => losses.push(e) }).start();

  // A writer that increments one counter as fast as it can, and appends an event per step.
  let stop = false;
  let done = 0;
  let last = performance.now();
  let longestGap = 0;
  const failures: unknown[] = [];
  const writer = (async () => {
    while (!stop) {
      try {
        await counters.mutate('n', (cur) => (cur ?? 0) + 1);
        done++;
        longestGap = Math.max(longestGap, performance.now() - last);
        last = performance.now();
        await events.append('drover.evt.test.step', { n: done });
      } catch (err) {
        failures.push(err);
        return;
      }
    }
  })();
  await sleep(500);
  const leader = await leaderOf('KV_cluster_state');
  const victim = cluster.servers.find((s) => s.name === leader)!;
  const before = done;
  await victim.kill();
  // The election takes a few seconds (more on a loaded machine); then writes go on.
  const until = Date.now() + 40_000;
  while (done < before + 20 && failures.length === 0 && Date.now() < until) await sleep(100);
  stop = true;
  await writer;
  keeper.stop();

  t.diagnostic(`longest pause in writes: ${Math.round(longestGap)} ms`);
  assert.deepEqual(failures, []);
  assert.ok(done >= before + 20, `only ${done - before} writes after the kill`);
  // Every increment counted exactly once, timed-out tries included.
  assert.equal((await counters.get('n'))?.value, done);
  assert.notEqual(await leaderOf('KV_cluster_state'), leader);
  assert.deepEqual(losses, []);
  assert.equal((await leases.get('leader'))?.value.holder, 'ctl-a');
  await lease.renew();
  const logged = await events.read({ limit: 100_000 });
  assert.equal(logged.length, done, 'an appended event is missing or doubled');
  assert.deepEqual(
    logged.map((e) => (e.value as { n: number }).n),
    Array.from({ length: done }, (_, i) => i + 1),
  );
  await victim.start();
  await lease.release();
});

test('a request in flight while the servers of both ends crash is answered once', async () => {
  // Every server runs (a failed test before may have left one down).
  await Promise.all(cluster.servers.filter((s) => s.pid() === undefined).map((s) => s.start()));
  const a = await cluster.connect('svc', { probeMs: 500 });
  const b = await cluster.connect('client', { probeMs: 500, requestTimeoutMs: 20_000 });
  let runs = 0;
  a.serve('drover.test.slow', async () => {
    runs++;
    await sleep(1500);
    return new TextEncoder().encode(JSON.stringify({ ok: true, result: runs }));
  });
  await a.flush();
  const reply = b.request('drover.test.slow', {});
  await sleep(300);
  // The servers both ends are connected to die (and come back later).
  const used = new Set([a.nc.getServer(), b.nc.getServer()]);
  const victims = cluster.servers.filter((s) => used.has(s.url.replace('nats://', '')));
  assert.ok(victims.length >= 1 && victims.length < 3);
  await Promise.all(victims.map((s) => s.kill()));
  assert.equal(await reply, 1);
  assert.equal(runs, 1);
  await Promise.all(victims.map((s) => s.start()));
});

test('concurrent compare-and-set writes of one revision on an R3 bucket: exactly one wins', async () => {
  await Promise.all(cluster.servers.filter((s) => s.pid() === undefined).map((s) => s.start()));
  const store = await openR3<string>('cluster_cas');
  let revision = await store.put('k', 'start');
  for (let round = 0; round < 20; round++) {
    // nats-server 2.9.10 accepted all of these on a replicated stream: its per-subject revision
    // check is made before the write is replicated, so writes in flight all pass it.
    const results = await Promise.allSettled(
      ['a', 'b', 'c', 'd'].map((w) => store.update('k', `${w}${round}`, revision)),
    );
    const won = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    assert.equal(won.length, 1, `round ${round}: ${won.length} writes of revision ${revision} won`);
    for (const r of results) {
      if (r.status === 'rejected') assert.ok(isDroverError(r.reason, 'FAILED_PRECONDITION'));
    }
    revision = won[0]!;
    assert.equal((await store.get('k'))?.revision, revision);
  }
});

test('concurrent mutates of one record lose no returned write, across a leader crash', async () => {
  await Promise.all(cluster.servers.filter((s) => s.pid() === undefined).map((s) => s.start()));
  const store = await openR3<Record<string, string>>('cluster_items');
  await store.put('op', {});
  // Like a drain's workers: each settles its own items of one record, each item once.
  const writers = ['w0', 'w1', 'w2', 'w3'];
  const perWriter = 30;
  const returned: string[] = [];
  const failures: unknown[] = [];
  let crashAt = 0;
  let crashed: Promise<void> = Promise.resolve();
  await Promise.all(
    writers.map(async (w) => {
      for (let i = 0; i < perWriter; i++) {
        const item = `${w}-${i}`;
        try {
          await store.mutate('op', (cur) => ({ ...cur, [item]: 'done' }));
        } catch (err) {
          failures.push(err);
          return;
        }
        returned.push(item);
        // Crash the stream leader right after a write returned, with the others in flight.
        if (returned.length === 40 && crashAt === 0) {
          crashAt = returned.length;
          crashed = (async () => {
            const leader = await leaderOf('KV_cluster_items');
            await cluster.servers.find((s) => s.name === leader)!.kill();
          })();
        }
      }
    }),
  );
  await crashed;
  assert.deepEqual(failures, []);
  assert.ok(crashAt > 0);
  const final = (await store.get('op'))!.value;
  const lost = returned.filter((item) => final[item] !== 'done');
  assert.deepEqual(lost, [], `${lost.length} of ${returned.length} returned writes are lost`);
  assert.equal(Object.keys(final).length, writers.length * perWriter);
  await Promise.all(cluster.servers.filter((s) => s.pid() === undefined).map((s) => s.start()));
});

test('objects put with 8 chunks in flight through each server of an R3 bucket read back whole', async () => {
  // Through a server that does not lead the stream, chunks reach the leader over a route: they
  // must keep their order there too (the stock get's digest check says so).
  let store: ObjectFiles | null = null;
  for (let i = 0; store === null; i++) {
    try {
      store = await ObjectFiles.open(bus, { bucket: 'objs', create: true, replicas: 3 });
    } catch (err) {
      if (i > 100) throw err;
      await sleep(200);
    }
  }
  for (const server of cluster.servers) {
    const via = await cluster.connect(`objects via ${server.name}`, { servers: [server.url] });
    const objects = await ObjectFiles.open(via, { bucket: 'objs', create: false });
    const data = randomBytes(40 * 64 * 1024 + 99);
    async function* pieces(): AsyncGenerator<Uint8Array> {
      for (let at = 0; at < data.length; at += 100_000) yield data.subarray(at, at + 100_000);
    }
    const name = `set/job/via-${server.name}`;
    const put = await objects.put(name, pieces());
    assert.equal(
      put.digest.replace(/=+$/, ''),
      `SHA-256=${createHash('sha256').update(data).digest('base64url')}`,
    );
    const res = await (await new Objm(jetstream(bus.nc)).open('objs')).get(name);
    assert.ok(res, `no ${name}`);
    const parts: Uint8Array[] = [];
    for await (const c of res.data as unknown as AsyncIterable<Uint8Array>) parts.push(c);
    assert.ok(!(await res.error), `stock get of ${name}: ${String(await res.error)}`);
    assert.ok(Buffer.concat(parts).equals(data), `${name}: bytes differ`);
  }
});
