import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError, ErrorCode, isDroverError, toDroverError } from './errors.js';
import { jsonLogger } from './logger.js';

test('DroverError carries code, retryable, details and cause', () => {
  const cause = new Error('low');
  const err = new DroverError(ErrorCode.NotFound, 'no job x', {
    retryable: true,
    cause,
    details: { job: 'x' },
  });
  assert.equal(err.code, 'NOT_FOUND');
  assert.equal(err.retryable, true);
  assert.equal(err.cause, cause);
  assert.deepEqual(err.details, { job: 'x' });
  assert.equal(err.name, 'DroverError');
  assert.ok(isDroverError(err, ErrorCode.NotFound));
  assert.ok(!isDroverError(err, ErrorCode.Internal));
});

test('the first error wins; rollback errors are attached', () => {
  const first = new DroverError(ErrorCode.Criu, 'dump failed');
  first.suppress(new Error('thaw failed'));
  assert.equal(first.message, 'dump failed');
  assert.equal((first.suppressed[0] as Error).message, 'thaw failed');
});

test('toDroverError wraps foreign errors and keeps ours', () => {
  const ours = new DroverError(ErrorCode.Timeout, 't');
  assert.equal(toDroverError(ours), ours);
  const wrapped = toDroverError(new TypeError('bad'));
  assert.equal(wrapped.code, 'INTERNAL');
  assert.equal(wrapped.message, 'bad');
});

test('jsonLogger writes JSON lines with child fields and drops lower levels', () => {
  const lines: string[] = [];
  const log = jsonLogger((l) => lines.push(l), { level: 'info' }).child({ component: 'x' });
  log.debug('hidden');
  log.info('shown', { err: new DroverError(ErrorCode.Criu, 'boom') });
  assert.equal(lines.length, 1);
  const rec = JSON.parse(lines[0]!);
  assert.equal(rec.msg, 'shown');
  assert.equal(rec.component, 'x');
  assert.deepEqual(rec.err, { name: 'DroverError', message: 'boom', code: 'CRIU' });
});

test('jsonLogger writes an error in full: details, its cause chain and rollback errors', () => {
  const lines: string[] = [];
  const log = jsonLogger((l) => lines.push(l));
  const low = new DroverError(ErrorCode.Syscall, 'kill failed', { details: { errno: 3 } });
  const first = new DroverError(ErrorCode.Criu, 'dump failed', {
    cause: low,
    details: { logTail: ['Error (criu/sk-inet.c:1): x'] },
  });
  first.suppress(new DroverError(ErrorCode.Cgroup, 'thaw failed', { cause: new Error('EBUSY') }));
  log.error('migration failed', { err: first });
  const rec = JSON.parse(lines[0]!);
  assert.equal(rec.err.message, 'dump failed');
  assert.deepEqual(rec.err.details, { logTail: ['Error (criu/sk-inet.c:1): x'] });
  assert.equal(rec.err.cause.message, 'kill failed');
  assert.deepEqual(rec.err.cause.details, { errno: 3 });
  assert.equal(rec.err.suppressed[0].message, 'thaw failed');
  assert.equal(rec.err.suppressed[0].code, 'CGROUP');
  assert.equal(rec.err.suppressed[0].cause.message, 'EBUSY');
});
