/**
 * Unit tests of the drain's retries over a faked layer below: a move that fails for a transient
 * reason (the migration rolled back, the job runs where it was) is tried again before the drain
 * gives up; one that cannot succeed is not.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError, ErrorCode, nullLogger } from '@drover/common';
import type { AgentInfo, OperationRecord } from '@drover/protocol';
import { DRAIN_ATTEMPTS, drainHost, refusedForRoom, type DrainContext } from './drain.js';
import { MemRecords } from './mem-records.js';
import type { HostView } from './placement.js';

function views(): HostView[] {
  return ['h1', 'h2', 'h3'].map((h) => ({
    host: h,
    info: {
      host: h,
      cpuFlags: [],
      memory: { totalBytes: 8 * 2 ** 30, availableBytes: 4 * 2 ** 30 },
      criu: { version: '4.2.1', lazyPages: true, memTrack: false },
      jobs: [],
    } as unknown as AgentInfo,
    cordoned: false,
    reachable: true,
    lastSeenMs: Date.now(),
  }));
}

/** A cluster where job `j1` runs on h1 and each migration fails with the next error given. */
function cluster(failures: (DroverError | null | ((destination: string) => DroverError))[]): {
  ctx: DrainContext;
  ops: MemRecords<OperationRecord>;
  tries: string[];
} {
  const ops = new MemRecords<OperationRecord>();
  let where = 'h1';
  const tries: string[] = [];
  const ctx: DrainContext = {
    ops,
    log: nullLogger,
    retryPauseMs: 1,
    hosts: views,
    cordon: async () => {},
    jobsOn: async (host) =>
      host === where ? [{ id: 'j1', name: 'j1', memoryBytes: 1 << 20 }] : [],
    whereIs: async () => ({ host: where, state: 'running' }),
    blockers: async () => [],
    migrate: async (source, jobId, destination) => {
      tries.push(destination);
      const f = failures.shift();
      const err = typeof f === 'function' ? f(destination) : f;
      if (err) throw err; // rolled back: the job runs where it was
      where = destination;
      return { migrationId: `m-${tries.length}`, frozenMs: 42 };
    },
  };
  return { ctx, ops, tries };
}

const transient = (): DroverError =>
  new DroverError(ErrorCode.Unavailable, 'the agent on h2 stopped answering during migrate', {
    retryable: true,
  });

test('a move that fails for a transient reason is tried again; the drain ends done', async () => {
  const { ctx, tries } = cluster([transient()]);
  const op = await drainHost(ctx, 'h1', 1);
  assert.equal(op.state, 'done', JSON.stringify(op));
  assert.equal(tries.length, 2);
  const item = op.items![0]!;
  assert.deepEqual([item.state, item.attempts, item.reason], ['done', 2, null]);
  assert.equal(item.migrationId, 'm-2');
});

test(`after ${DRAIN_ATTEMPTS} transient failures the drain gives up and says why`, async () => {
  const { ctx, tries } = cluster(Array.from({ length: DRAIN_ATTEMPTS }, transient));
  const op = await drainHost(ctx, 'h1', 1);
  assert.equal(op.state, 'failed');
  assert.equal(tries.length, DRAIN_ATTEMPTS);
  const item = op.items![0]!;
  assert.deepEqual([item.state, item.attempts], ['failed', DRAIN_ATTEMPTS]);
  assert.match(item.reason!, /stopped answering/);
});

test('a failure another try cannot cure is not tried again', async () => {
  const { ctx, tries } = cluster([
    new DroverError(ErrorCode.FailedPrecondition, 'host h2 is cordoned; uncordon it first'),
  ]);
  const op = await drainHost(ctx, 'h1', 1);
  assert.equal(op.state, 'failed');
  assert.equal(tries.length, 1);
  assert.deepEqual([op.items![0]!.state, op.items![0]!.attempts], ['failed', 1]);
});

/** A destination's admission refusal as the source passes it up (wrapped, the refusal its cause). */
const noRoom = (dest: string): DroverError =>
  new DroverError(ErrorCode.FailedPrecondition, `migration to ${dest} refused`, {
    cause: new DroverError(
      ErrorCode.FailedPrecondition,
      `${dest} cannot take job j1: not enough memory (needs 2048 MiB at the restore's peak)`,
      { details: { jobId: 'j1', host: dest, reason: 'capacity', neededBytes: 2 ** 31 } },
    ),
  });

test('a destination that refuses for room is left out: the next try lands elsewhere', async () => {
  const { ctx, tries } = cluster([noRoom]);
  const op = await drainHost(ctx, 'h1', 1);
  assert.equal(op.state, 'done', JSON.stringify(op));
  assert.equal(tries.length, 2);
  assert.notEqual(tries[1], tries[0]);
  assert.equal(op.items![0]!.destination, tries[1]);
});

test('when every other host refuses for room the drain fails, trying none twice', async () => {
  const { ctx, tries } = cluster([noRoom, noRoom, noRoom]);
  const op = await drainHost(ctx, 'h1', 1);
  assert.equal(op.state, 'failed');
  assert.deepEqual([...tries].sort(), ['h2', 'h3']);
  assert.match(
    op.items![0]!.reason!,
    /no other host can take job j1: h\d, h\d refused it for room/,
  );
});

test('refusedForRoom names the refusing host through causes, and nothing else', () => {
  assert.equal(refusedForRoom(noRoom('h3')), 'h3');
  assert.equal(refusedForRoom(transient()), null);
  assert.equal(refusedForRoom(new Error('x')), null);
  assert.equal(refusedForRoom('text'), null);
});
