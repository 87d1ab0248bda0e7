import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import { MigrationAuthorizations } from './authorization.js';

const TICKET = 'a'.repeat(64);
const denied = (e: unknown): boolean => isDroverError(e, 'PERMISSION_DENIED');

test('an authorization is used once, for its job and source only', () => {
  const auth = new MigrationAuthorizations();
  auth.authorize({ jobId: 'job-1', source: 'h1', ticket: TICKET });
  assert.throws(() => auth.consume({ jobId: 'job-2', source: 'h1', ticket: TICKET }), denied);
  assert.throws(() => auth.consume({ jobId: 'job-1', source: 'h3', ticket: TICKET }), denied);
  assert.throws(
    () => auth.consume({ jobId: 'job-1', source: 'h1', ticket: 'b'.repeat(64) }),
    denied,
  );
  // Bad attempts consumed nothing; the right one does, once.
  assert.equal(auth.size, 1);
  auth.consume({ jobId: 'job-1', source: 'h1', ticket: TICKET });
  assert.equal(auth.size, 0);
  assert.throws(() => auth.consume({ jobId: 'job-1', source: 'h1', ticket: TICKET }), denied);
});

test('an authorization lapses after its TTL', () => {
  let now = 1_000_000;
  const auth = new MigrationAuthorizations(() => now);
  const { expiresAt } = auth.authorize({
    jobId: 'job-1',
    source: 'h1',
    ticket: TICKET,
    ttlMs: 500,
  });
  assert.equal(expiresAt, new Date(1_000_500).toISOString());
  now += 500;
  assert.throws(() => auth.consume({ jobId: 'job-1', source: 'h1', ticket: TICKET }), denied);
  assert.equal(auth.size, 0);
});

test('never authorized: refused', () => {
  assert.throws(
    () => new MigrationAuthorizations().consume({ jobId: 'j', source: 'h1', ticket: TICKET }),
    (e: unknown) => denied(e) && /not authorized/.test((e as Error).message),
  );
});
