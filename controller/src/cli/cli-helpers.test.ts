/** The CLI's pure helpers: failures printed in full, exit codes per kind, job names, --since. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import type { ClusterJob } from '@drover/protocol';
import { validateRequest } from './context.js';
import { exitCodeOfCode, exitCodeOfOperation } from './exit-codes.js';
import { pickJob } from './job-ref.js';
import { parseSince } from './logs-follow.js';
import { failureReport } from './output.js';

test('a failure is printed with its causes, its rollback errors and CRIU log lines', () => {
  const text = failureReport({
    code: 'CRIU',
    message: 'dump failed: Error (criu/file-lock.c:110): Some file locks are hold',
    details: {},
    cause: { code: 'SYSCALL', message: 'kill: ESRCH', details: {} },
    suppressed: [
      {
        code: 'CGROUP',
        message: 'thaw failed',
        details: {
          logPath: '/srv/drover/x/dump.log',
          logTail: ['(00.1) Error (criu/file-lock.c:110): Some file locks are hold'],
        },
      },
    ],
  });
  assert.equal(
    text,
    [
      'error: CRIU: dump failed: Error (criu/file-lock.c:110): Some file locks are hold',
      '  caused by SYSCALL: kill: ESRCH',
      '  while rolling back: CGROUP: thaw failed',
      "CRIU's log (/srv/drover/x/dump.log):",
      '  (00.1) Error (criu/file-lock.c:110): Some file locks are hold',
    ].join('\n'),
  );
});

test('one exit code per kind of refusal, thrown or recorded in an operation', () => {
  assert.equal(exitCodeOfCode('FAILED_PRECONDITION'), 4);
  assert.equal(exitCodeOfCode('CRIU'), 1);
  assert.equal(exitCodeOfCode('START_FAILED'), 1);
  assert.equal(exitCodeOfOperation({ state: 'done', error: null }), 0);
  // A migration refused by preflight (EXTERNAL_TCP) exits 4 as `preflight` does.
  assert.equal(exitCodeOfOperation({ state: 'failed', error: { code: 'FAILED_PRECONDITION' } }), 4);
  assert.equal(exitCodeOfOperation({ state: 'failed', error: { code: 'CRIU' } }), 1);
  // It ran: an agent that died on the way makes it a failure, not "unreachable".
  assert.equal(exitCodeOfOperation({ state: 'failed', error: { code: 'UNAVAILABLE' } }), 1);
  const drain = (codes: string[]) =>
    exitCodeOfOperation({
      state: 'failed',
      error: { code: 'PARTIAL' },
      items: [{ state: 'done' }, ...codes.map((code) => ({ state: 'skipped', code }))],
    });
  assert.equal(drain(['FAILED_PRECONDITION']), 4);
  assert.equal(drain(['FAILED_PRECONDITION', 'CRIU']), 1);
});

test('jobs by name: a live job wins, several live ones are refused with their ids', () => {
  const j = (id: string, name: string, state: string, host = 'h1') =>
    ({ id, name, state, host }) as ClusterJob;
  const records = [
    j('job-a', 'web', 'exited'),
    j('job-b', 'web', 'running', 'h2'),
    j('job-c', 'db', 'running'),
    j('job-d', 'db', 'running', 'h3'),
    j('job-e', 'old', 'exited'),
  ];
  assert.equal(pickJob(records, 'job-a'), 'job-a');
  assert.equal(pickJob(records, 'web'), 'job-b');
  assert.equal(pickJob(records, 'old'), 'job-e');
  assert.equal(pickJob(records, 'nobody'), 'nobody');
  assert.throws(
    () => pickJob(records, 'db'),
    (e: unknown) =>
      isDroverError(e, 'INVALID_ARGUMENT') &&
      /2 jobs are named db: job-c \(running on h1\), job-d \(running on h3\); give an id/.test(
        e.message,
      ),
  );
});

test('--since takes durations and times; bad flags name the flag, not the field', () => {
  assert.equal(parseSince('10s', 100_000), 90_000);
  assert.equal(parseSince('2m', 1_000_000), 880_000);
  assert.equal(parseSince('2026-12-06T15:00:00Z'), Date.parse('2026-12-06T15:00:00Z'));
  assert.throws(() => parseSince('soon'), /--since wants/);
  assert.throws(
    () => validateRequest('run', { command: ['x'], cwd: 'rel' }, { cwd: '--cwd' }),
    (e: unknown) =>
      (e as { usage?: boolean }).usage === true &&
      (e as Error).message ===
        '--cwd must be an absolute path (starting with /) without "." or ".." parts (got "rel")',
  );
});
