/** Each job once where it lives now; ended jobs and past hops with --all; what rm and prune take. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import type { JobInfo } from '@drover/protocol';
import {
  allRecords,
  currentJobs,
  endedJobs,
  latestRecord,
  recordsToRemove,
} from './job-records.js';

const rec = (id: string, host: string, state: string, extra: Partial<JobInfo> = {}): JobInfo =>
  ({
    id,
    name: id,
    host,
    state,
    startedAt: '2026-01-01T00:00:00Z',
    exitedAt: null,
    ...extra,
  }) as JobInfo;

// A redis moved twice (h1 → h2 → h3), a job mid-migration, an ended job, a lost one.
const records = [
  rec('redis', 'h1', 'migrated'),
  rec('redis', 'h2', 'migrated'),
  rec('redis', 'h3', 'running'),
  rec('web', 'h1', 'migrating'),
  rec('web', 'h2', 'starting'),
  rec('batch', 'h2', 'exited', { exitedAt: '2026-01-01T01:00:00Z', exitCode: 0 }),
  rec('gone', 'h1', 'migrated'),
  rec('gone', 'h3', 'lost'),
];

test('jobs shows each live job once, where it lives now', () => {
  assert.deepEqual(
    currentJobs(records).map((j) => [j.id, j.host, j.state]),
    [
      ['redis', 'h3', 'running'],
      ['web', 'h1', 'migrating'],
    ],
  );
  assert.equal(allRecords(records).length, records.length);
  assert.deepEqual(
    allRecords(records)
      .filter((j) => j.id === 'gone')
      .map((j) => j.state),
    ['migrated', 'lost'],
  );
});

test('ended jobs are what prune takes; rm refuses a live job and an unknown one, removing nothing', () => {
  assert.deepEqual([...endedJobs(records).keys()].sort(), ['batch', 'gone']);
  assert.deepEqual(
    recordsToRemove(records, ['gone']).map((r) => r.host),
    ['h1', 'h3'],
  );
  assert.throws(
    () => recordsToRemove(records, ['batch', 'redis']),
    (e: unknown) =>
      isDroverError(e, 'FAILED_PRECONDITION') && /redis is running on h3/.test(e.message),
  );
  assert.throws(
    () => recordsToRemove(records, ['nope']),
    (e: unknown) => isDroverError(e, 'NOT_FOUND'),
  );
});

test('the record that tells where a job ended is its last hop', () => {
  assert.equal(latestRecord(records.filter((r) => r.id === 'gone'))!.host, 'h3');
  assert.equal(latestRecord(records.filter((r) => r.id === 'redis'))!.host, 'h3');
  assert.equal(latestRecord([]), null);
});
