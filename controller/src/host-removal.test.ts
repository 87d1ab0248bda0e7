/**
 * Tests of `hosts rm`: refused for an unknown host, while its agent answers, and while its last
 * heartbeat lists live jobs (unless drained since, or forced); otherwise it is forgotten by the
 * registry, the remembered hosts and the cordons.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, isDroverError, nullLogger } from '@drover/common';
import type { AgentInfo, OperationRecord } from '@drover/protocol';
import { HostRegistry } from './host-registry.js';
import { removeHost, type HostRemovalContext } from './host-removal.js';

function world(opts: {
  answers?: boolean;
  jobs?: { id: string; state: string }[];
  drains?: string[];
}) {
  const registry = new HostRegistry({ unreachableAfterMs: 1000 });
  registry.observe({
    host: 'h2',
    jobs: (opts.jobs ?? []).map((j) => ({ ...j, name: j.id })),
  } as unknown as AgentInfo);
  const forgotten: string[] = [];
  const cordonsDeleted: string[] = [];
  const ops = new Map<string, { value: OperationRecord }>(
    (opts.drains ?? []).map((state, i) => [
      `op-${i}`,
      {
        value: {
          opId: `op-${i}`,
          kind: 'drain',
          host: 'h2',
          state,
          createdAt: `2026-01-0${i + 1}T00:00:00Z`,
        } as unknown as OperationRecord,
      },
    ]),
  );
  const ctx: HostRemovalContext = {
    registry,
    known: {
      has: (h) => h === 'h2' || h === 'h3',
      forget: async (h) => void forgotten.push(h),
    },
    cordons: {
      delete: async (h: string) => void cordonsDeleted.push(h),
    } as HostRemovalContext['cordons'],
    ops: { list: async () => ops } as unknown as HostRemovalContext['ops'],
    answers: () => Promise.resolve(opts.answers === true),
    log: nullLogger,
  };
  return { ctx, registry, forgotten, cordonsDeleted };
}

const refused = (code: ErrorCode, re: RegExp) => (err: unknown) => {
  assert.ok(isDroverError(err, code), String(err));
  assert.match((err as Error).message, re);
  return true;
};

test('an unknown host is NOT_FOUND; one whose agent answers is refused', async () => {
  const w = world({ answers: true });
  await assert.rejects(
    removeHost(w.ctx, { host: 'h9' }),
    refused(ErrorCode.NotFound, /no host h9/),
  );
  await assert.rejects(
    removeHost(w.ctx, { host: 'h2' }),
    refused(ErrorCode.FailedPrecondition, /still runs its agent/),
  );
  assert.ok(w.registry.get('h2'), 'still known');
});

test('live jobs in the last heartbeat refuse it, unless the last drain finished or --force', async () => {
  const jobs = [
    { id: 'j1', state: 'running' },
    { id: 'j2', state: 'exited' },
  ];
  const busy = world({ jobs, drains: ['done', 'failed'] });
  await assert.rejects(
    removeHost(busy.ctx, { host: 'h2' }),
    refused(ErrorCode.FailedPrecondition, /1 live jobs \(j1\).*drain/),
  );
  assert.deepEqual(busy.forgotten, []);
  const drained = world({ jobs, drains: ['failed', 'done'] });
  assert.deepEqual((await removeHost(drained.ctx, { host: 'h2' })).jobs, ['j1']);
  const forced = world({ jobs });
  const r = await removeHost(forced.ctx, { host: 'h2', force: true });
  assert.equal(r.host, 'h2');
  assert.equal(forced.registry.get('h2'), undefined);
  assert.deepEqual(forced.forgotten, ['h2']);
  assert.deepEqual(forced.cordonsDeleted, ['h2']);
});

test('a host with only ended jobs goes; one only remembered (never heard) goes too', async () => {
  const w = world({ jobs: [{ id: 'j2', state: 'exited' }] });
  const r = await removeHost(w.ctx, { host: 'h2' });
  assert.deepEqual(r.jobs, []);
  assert.ok(r.lastSeen !== null);
  const remembered = await removeHost(w.ctx, { host: 'h3' });
  assert.deepEqual(remembered, { host: 'h3', lastSeen: null, jobs: [] });
  assert.deepEqual(w.forgotten, ['h2', 'h3']);
});
