/**
 * Whole lists from paged replies, over a fake controller client: key-paged lists are asked page
 * after page from `next`, sequence-paged ones up to the asked limit (a page of the newest events
 * goes on from where it was cut, not from the newest again), other operations pass through, and
 * every request carries the caller's timeout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { callAllPages } from './controller-pages.js';
import type { ControllerClient } from './controller-rpc.js';

interface Asked {
  op: string;
  req: Record<string, unknown>;
  timeoutMs: number | undefined;
}

function fakeClient(answer: (op: string, req: Record<string, unknown>) => unknown): {
  client: ControllerClient;
  asked: Asked[];
} {
  const asked: Asked[] = [];
  const client = {
    async call(op: string, req: Record<string, unknown>, timeoutMs?: number) {
      asked.push({ op, req, timeoutMs });
      return answer(op, req);
    },
  } as unknown as ControllerClient;
  return { client, asked };
}

test('a key-paged list is asked page after page until next is null', async () => {
  const ids = ['a', 'b', 'c', 'd', 'e'];
  const { client, asked } = fakeClient((_op, req) => {
    const after = req['after'] as string | undefined;
    const rest = ids.filter((i) => after === undefined || i > after).slice(0, 2);
    const last = rest.at(-1);
    return {
      jobs: rest.map((id) => ({ id })),
      next: last !== undefined && last !== ids.at(-1) ? last : null,
    };
  });
  const r = await callAllPages(client, 'jobs', { all: true }, 1234);
  assert.deepEqual(
    r.jobs.map((j) => j.id),
    ids,
  );
  assert.equal(r.next, null);
  assert.deepEqual(
    asked.map((a) => a.req),
    [{ all: true }, { all: true, after: 'b' }, { all: true, after: 'd' }],
  );
  assert.ok(asked.every((a) => a.timeoutMs === 1234));
});

test('the hosts each page could not hear from are named once for the whole list', async () => {
  const { client } = fakeClient((_op, req) =>
    req['after'] === undefined
      ? { jobs: [{ id: 'a' }], next: 'a', unanswered: ['h2 (unreachable)'] }
      : { jobs: [{ id: 'b' }], next: null, unanswered: ['h2 (unreachable)', 'h1 (no reply)'] },
  );
  const r = await callAllPages(client, 'jobs', {});
  assert.deepEqual(
    r.jobs.map((j) => j.id),
    ['a', 'b'],
  );
  assert.deepEqual(r.unanswered, ['h1 (no reply)', 'h2 (unreachable)']);
  const { client: quiet } = fakeClient(() => ({ hosts: [{ host: 'h1' }], next: null }));
  assert.equal('unanswered' in (await callAllPages(quiet, 'hosts', {})), false);
});

test('the newest events cut by size go on from the cut, up to the asked limit', async () => {
  const { client, asked } = fakeClient((_op, req) =>
    req['newest'] === true
      ? { events: [{ seq: 8 }, { seq: 9 }], next: 9 }
      : { events: [{ seq: 10 }, { seq: 11 }], next: 11 },
  );
  const r = await callAllPages(client, 'events', { newest: true, limit: 3 });
  assert.deepEqual(
    r.events.map((e) => e.seq),
    [8, 9, 10, 11],
  );
  assert.deepEqual(asked[1]!.req, { limit: 1, sinceSeq: 9 });
  assert.equal(asked.length, 2);
});

test('an operation that is not a list passes through once', async () => {
  const { client, asked } = fakeClient(() => ({ opId: 'op-1', state: 'done' }));
  const r = await callAllPages(client, 'status', { opId: 'op-1' }, 500);
  assert.equal(r.opId, 'op-1');
  assert.deepEqual(asked, [{ op: 'status', req: { opId: 'op-1' }, timeoutMs: 500 }]);
});
