/** Requests with ids, acknowledgements and re-sends, against a real nats-server on loopback. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { headers } from '@nats-io/nats-core';
import { isDroverError, type DroverError } from '@drover/common';
import { Bus } from './connection.js';
import { ACK_HEADER, REQUEST_ID_HEADER } from './request.js';
import { startTestNats, type TestNats } from './test-nats.js';

let nats: TestNats;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const reply = (result: unknown): Uint8Array =>
  new TextEncoder().encode(JSON.stringify({ ok: true, result }));

before(async () => {
  nats = await startTestNats('request-test');
});

after(async () => {
  await nats?.stop();
});

function connect(name: string, probeMs = 200): Promise<Bus> {
  return Bus.connect({ servers: [nats.url], name, probeMs, requestTimeoutMs: 5000 });
}

test('copies of one request id run once; each copy is acknowledged and answered', async () => {
  const server = await connect('dedup-server');
  let runs = 0;
  server.serve('drover.test.dedup', async () => {
    runs++;
    await sleep(200);
    return reply(runs);
  });
  await server.flush();
  const inbox = 'drover.test.inbox.dedup';
  const got: { ack: boolean; body: string }[] = [];
  const sub = nats.bus.nc.subscribe(inbox, {
    callback: (_e, m) => {
      got.push({
        ack: m.headers?.has(ACK_HEADER) ?? false,
        body: new TextDecoder().decode(m.data),
      });
    },
  });
  const h = headers();
  h.set(REQUEST_ID_HEADER, 'req-1');
  for (let i = 0; i < 3; i++)
    nats.bus.nc.publish('drover.test.dedup', '{}', { reply: inbox, headers: h });
  await sleep(600);
  // Once finished, a late copy is answered from the kept reply, without an acknowledgement.
  nats.bus.nc.publish('drover.test.dedup', '{}', { reply: inbox, headers: h });
  await sleep(200);
  sub.unsubscribe();
  assert.equal(runs, 1);
  assert.equal(got.filter((g) => g.ack).length, 3);
  assert.deepEqual(
    got.filter((g) => !g.ack).map((g) => g.body),
    Array(4).fill('{"ok":true,"result":1}'),
  );
  await server.close();
});

test('a request nobody serves yet is re-sent until a server appears (within the grace)', async () => {
  const client = await connect('late-client');
  const asked = client.request('drover.test.late', {});
  await sleep(700);
  const server = await connect('late-server');
  server.serve('drover.test.late', async () => reply('here'));
  assert.equal(await asked, 'here');
  await server.close();
  await client.close();
});

test('a request swallowed by a silent subscriber (a client gone with a cut link) is re-sent', async () => {
  // What NATS keeps for a client whose link was cut: its subscription, which answers nothing.
  const stale = nats.bus.nc.subscribe('drover.test.stale', { callback: () => undefined });
  await nats.bus.nc.flush();
  const client = await connect('stale-client');
  const server = await connect('stale-server');
  try {
    const asked = client.request('drover.test.stale', {}, 3000);
    await sleep(300);
    // The client comes back with a new connection and serves again.
    let runs = 0;
    server.serve('drover.test.stale', async () => reply(++runs));
    assert.equal(await asked, 1);
    assert.equal(runs, 1);
  } finally {
    stale.unsubscribe();
    await server.close();
    await client.close();
  }
});

test('an acknowledged request is never run again by a server that restarted', async () => {
  const first = await connect('first-server');
  first.serve('drover.test.restart', () => new Promise(() => undefined));
  await first.flush();
  const client = await connect('restart-client');
  const asked = client.request('drover.test.restart', {}, 5000);
  await sleep(300);
  // The server that acknowledged it dies; another takes the subject over.
  await first.close();
  const second = await connect('second-server');
  let runs = 0;
  second.serve('drover.test.restart', async () => {
    runs++;
    return reply('again');
  });
  await assert.rejects(asked, (e: unknown) => {
    assert.ok(isDroverError(e, 'UNAVAILABLE'), String(e));
    assert.equal((e as DroverError).details.outcomeUnknown, true);
    return true;
  });
  assert.equal(runs, 0);
  // A new request (a new id) runs normally.
  assert.equal(await client.request('drover.test.restart', {}), 'again');
  await second.close();
  await client.close();
});

test('an oversized request id is refused without running; an oversized reply becomes a failure', async () => {
  const server = await connect('hostile-server');
  let runs = 0;
  server.serve('drover.test.hostile', async () => {
    runs++;
    // More than NATS carries in one message: it cannot be sent as it is.
    return reply('x'.repeat(2 * 1024 * 1024));
  });
  await server.flush();
  const h = headers();
  h.set(REQUEST_ID_HEADER, 'i'.repeat(10_000));
  const refused = await nats.bus.nc.request('drover.test.hostile', '{}', {
    timeout: 2000,
    headers: h,
  });
  assert.match(new TextDecoder().decode(refused.data), /"code":"INVALID_ARGUMENT"/);
  assert.equal(runs, 0);
  const client = await connect('hostile-client');
  await assert.rejects(
    client.request('drover.test.hostile', {}, 3000),
    (err: DroverError) => isDroverError(err) && err.code === 'FAILED_PRECONDITION',
  );
  assert.equal(runs, 1);
  await client.close();
  await server.close();
});

test('a reply over the message limit comes back as a failure, and the server lives on', async () => {
  const server = await connect('big-reply-server');
  server.serve('drover.test.big', async (_s, data) =>
    new TextEncoder().encode(
      JSON.stringify({
        ok: true,
        result: 'x'.repeat(new TextDecoder().decode(data) === '"big"' ? 2 << 20 : 1),
      }),
    ),
  );
  await server.flush();
  const client = await connect('big-reply-client');
  try {
    await assert.rejects(client.request('drover.test.big', 'big'), (err: DroverError) => {
      assert.equal(err.code, 'FAILED_PRECONDITION');
      assert.match(err.message, /over the \d+-byte message limit/);
      return true;
    });
    assert.equal(await client.request('drover.test.big', 'small'), 'x');
  } finally {
    await client.close();
    await server.close();
  }
});
