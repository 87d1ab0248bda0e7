/** Tests of the job network's address book against an in-memory bucket with real compare-and-set. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError, ErrorCode, isDroverError, nullLogger } from '@drover/common';
import type { ClusterJob } from '@drover/protocol';
import { AddressBook, type AddressStore } from './address-book.js';
import { compileJobNetwork } from './config.js';

/** A bucket with the semantics StateStore has: create fails on a live key; CAS by revision. */
class MemBucket<T> implements AddressStore<T> {
  private readonly m = new Map<string, { value: T; revision: number }>();
  private rev = 0;
  async get(k: string): Promise<{ value: T; revision: number } | null> {
    await Promise.resolve();
    const v = this.m.get(k);
    return v ? structuredClone(v) : null;
  }
  async create(k: string, value: T): Promise<number> {
    await Promise.resolve();
    if (this.m.has(k)) throw new DroverError(ErrorCode.AlreadyExists, `${k} exists`);
    this.m.set(k, { value: structuredClone(value), revision: ++this.rev });
    return this.rev;
  }
  async mutate(k: string, fn: (cur: T | null) => T | null) {
    for (;;) {
      const cur = await this.get(k);
      const next = fn(cur ? cur.value : null);
      await Promise.resolve();
      if ((this.m.get(k)?.revision ?? 0) !== (cur?.revision ?? 0)) continue; // lost a race
      if (next === null) {
        this.m.delete(k);
        return null;
      }
      this.m.set(k, { value: structuredClone(next), revision: ++this.rev });
      return { value: next, revision: this.rev };
    }
  }
  async delete(k: string, revision?: number): Promise<void> {
    await Promise.resolve();
    if (revision !== undefined && this.m.get(k)?.revision !== revision)
      throw new DroverError(ErrorCode.FailedPrecondition, 'stale', { retryable: true });
    this.m.delete(k);
  }
  async keys(): Promise<string[]> {
    await Promise.resolve();
    return [...this.m.keys()];
  }
  async list(): Promise<Map<string, { value: T; revision: number }>> {
    await Promise.resolve();
    return new Map([...this.m].map(([k, v]) => [k, structuredClone(v)]));
  }
}

const net = compileJobNetwork({
  subnet: '10.78.5.0/24',
  gateway: '10.78.5.1',
  range: '10.78.5.1-10.78.5.6',
})!;
const clock = { ms: Date.parse('2026-12-01T00:00:00Z') };
const book = (): AddressBook =>
  new AddressBook(new MemBucket(), new MemBucket(), net, nullLogger, () => clock.ms);
const job = (id: string, state: string, host = 'h1'): ClusterJob =>
  ({ id, state, host, name: id }) as unknown as ClusterJob;
const code = (c: string) => (e: unknown) => isDroverError(e, c as never);

test('addresses are handed out lowest first, never the gateway, never twice', async () => {
  const b = book();
  const got = await Promise.all(['a', 'b', 'c', 'd', 'e'].map((j) => b.reserve(`job-${j}`, null)));
  const addrs = got.map((g) => g.address).sort();
  assert.deepEqual(addrs, ['10.78.5.2', '10.78.5.3', '10.78.5.4', '10.78.5.5', '10.78.5.6']);
  assert.deepEqual(got[0], { address: got[0]!.address, prefixLength: 24, gateway: '10.78.5.1' });
  await assert.rejects(b.reserve('job-f', null), code(ErrorCode.ResourceExhausted));
});

test('an address asked for must be in the range and free', async () => {
  const b = book();
  assert.equal((await b.reserve('job-a', null, '10.78.5.4')).address, '10.78.5.4');
  await assert.rejects(b.reserve('job-b', null, '10.78.5.4'), /in use by job job-a/);
  await assert.rejects(b.reserve('job-b', null, '10.78.5.1'), code(ErrorCode.InvalidArgument));
  await assert.rejects(b.reserve('job-b', null, '10.78.5.9'), code(ErrorCode.InvalidArgument));
});

test('names are unique; a refused name gives its address back', async () => {
  const b = book();
  await b.reserve('job-a', 'web');
  await assert.rejects(b.reserve('job-b', 'web'), /the name web belongs to job job-a/);
  assert.equal((await b.reserve('job-c', null)).address, '10.78.5.3', 'job-b left nothing held');
  assert.deepEqual(
    { ...(await b.resolve('web')), since: 'x' },
    { name: 'web', jobId: 'job-a', address: '10.78.5.2', since: 'x' },
  );
  assert.deepEqual(await b.table(), [{ name: 'web', address: '10.78.5.2' }]);
  await assert.rejects(b.resolve('db'), code(ErrorCode.NotFound));
});

test('reconcile releases only what ended for good, and nothing while a host is unreachable', async () => {
  const b = book();
  for (const j of ['live', 'moved', 'ended', 'stored', 'gone']) {
    const a = await b.reserve(`job-${j}`, j);
    await b.confirm(a.address, `job-${j}`);
  }
  const view = {
    jobs: [
      job('job-live', 'running'),
      job('job-moved', 'migrated', 'h1'),
      job('job-moved', 'running', 'h2'),
      job('job-ended', 'exited'),
      job('job-stored', 'checkpointed'),
    ],
    inImageSets: new Set(['job-stored']),
  };
  // Records younger than the grace period are kept: their job may not be listed yet.
  assert.deepEqual(await b.reconcile({ ...view, allHostsReachable: true }), []);
  clock.ms += 3 * 60_000;
  assert.deepEqual(await b.reconcile({ ...view, allHostsReachable: false }), []);
  const released = await b.reconcile({ ...view, allHostsReachable: true });
  assert.deepEqual(released.sort(), ['10.78.5.4', '10.78.5.6']); // ended, gone
  assert.deepEqual(
    (await b.table()).map((n) => n.name),
    ['live', 'moved', 'stored'],
  );
});

test('a fresh reservation is not released while its run is in progress, an old one is', async () => {
  const b = book();
  const a = await b.reserve('job-starting', null);
  const view = { jobs: [], inImageSets: new Set<string>(), allHostsReachable: true };
  assert.deepEqual(await b.reconcile(view), []);
  clock.ms += 3 * 60_000;
  assert.deepEqual(await b.reconcile(view), [a.address]);
});

test('a restored job claims its own address back; another job holding it refuses the restore', async () => {
  const b = book();
  const network = {
    mode: 'job',
    address: '10.78.5.3',
    prefixLength: 24,
    gateway: null,
    mac: '',
  } as const;
  await b.claim('job-a', 'web', network);
  await b.claim('job-a', 'web', network); // idempotent
  await assert.rejects(b.claim('job-b', null, network), /is now job job-a's/);
  await b.claim('job-b', null, { mode: 'host' });
});

test('a foreign address is skipped until its recheck', async () => {
  const b = book();
  const a = await b.reserve('job-a', 'web');
  await b.markForeign(a.address, 'job-a');
  assert.equal((await b.reserve('job-b', null)).address, '10.78.5.3');
  await assert.rejects(b.resolve('web'), code(ErrorCode.NotFound));
});

test('without a job network, only host-network jobs can run', async () => {
  const b = new AddressBook(new MemBucket(), new MemBucket(), null, nullLogger);
  await assert.rejects(b.reserve('job-a', null), /no job network is configured/);
});
