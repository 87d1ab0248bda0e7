/** Tests for EventLog against a real nats-server on loopback: append with ack, ordered filtered reads. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import { Bus } from './connection.js';
import { startTestNats, type TestNats } from './test-nats.js';
import { EventLog } from './event-log.js';

let nats: TestNats;
let bus: Bus;

before(async () => {
  nats = await startTestNats('event-test');
  bus = nats.bus;
});

after(async () => {
  await nats?.stop();
});

test('append acks with increasing seqs; read returns events in order, filtered and paged', async () => {
  const log = await EventLog.open(bus, { maxAgeMs: 60_000 });
  assert.deepEqual(await log.read({ limit: 10 }), []);
  assert.equal(await log.lastSeq(), 0);
  const seqs: number[] = [];
  for (let i = 0; i < 6; i++) {
    seqs.push(
      await log.append(i % 2 === 0 ? `drover.evt.job.j${i}` : `drover.evt.host.h${i}`, { i }),
    );
  }
  assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6]);
  assert.equal(await log.lastSeq(), 6);
  const all = await log.read({ limit: 100 });
  assert.deepEqual(
    all.map((e) => e.value),
    [0, 1, 2, 3, 4, 5].map((i) => ({ i })),
  );
  assert.deepEqual(
    all.map((e) => e.seq),
    seqs,
  );
  assert.ok(
    all.every((e) => e.time instanceof Date && Math.abs(Date.now() - e.time.getTime()) < 10_000),
  );
  const jobs = await log.read({ subjectFilter: 'drover.evt.job.>', limit: 100 });
  assert.deepEqual(
    jobs.map((e) => e.subject),
    ['drover.evt.job.j0', 'drover.evt.job.j2', 'drover.evt.job.j4'],
  );
  // Paging: limit, then resume after the last seq seen.
  const page1 = await log.read({ limit: 2 });
  const page2 = await log.read({ limit: 10, sinceSeq: page1.at(-1)!.seq });
  assert.deepEqual(
    [...page1, ...page2].map((e) => e.seq),
    seqs,
  );
  const hostsAfter3 = await log.read({ subjectFilter: 'drover.evt.host.*', sinceSeq: 3, limit: 1 });
  assert.deepEqual(
    hostsAfter3.map((e) => e.seq),
    [4],
  );
  // Reopening binds the existing stream and keeps the events.
  const again = await EventLog.open(bus);
  assert.equal((await again.read({ limit: 100 })).length, 6);
});

test('subjects outside drover.evt. and bad reads are INVALID_ARGUMENT', async () => {
  const log = await EventLog.open(bus);
  await assert.rejects(log.append('drover.agent.h1', {}), (e: unknown) =>
    isDroverError(e, 'INVALID_ARGUMENT'),
  );
  await assert.rejects(log.append('drover.evt.*', {}), (e: unknown) =>
    isDroverError(e, 'INVALID_ARGUMENT'),
  );
  await assert.rejects(log.read({ subjectFilter: 'foo.>', limit: 1 }), (e: unknown) =>
    isDroverError(e, 'INVALID_ARGUMENT'),
  );
  await assert.rejects(log.read({ limit: 0 }), (e: unknown) =>
    isDroverError(e, 'INVALID_ARGUMENT'),
  );
});
