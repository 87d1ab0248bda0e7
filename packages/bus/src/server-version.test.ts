/** Tests for the nats-server version check: parsing, comparing, what an old server means. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import {
  parseServerVersion,
  serverVersionAtLeast,
  serverVersionProblem,
} from './server-version.js';

test('versions parse with or without a v and a suffix; garbage is null', () => {
  assert.deepEqual(parseServerVersion('2.15.1'), [2, 15, 1]);
  assert.deepEqual(parseServerVersion('v2.10.26-beta'), [2, 10, 26]);
  assert.equal(parseServerVersion('nope'), null);
  assert.equal(parseServerVersion(undefined), null);
});

test('at least 2.12: 2.9.10 and 2.10.26 are not, 2.12.0 and 2.15.1 and 3.0.0 are', () => {
  assert.equal(serverVersionAtLeast('2.9.10'), false);
  assert.equal(serverVersionAtLeast('2.10.26'), false);
  assert.equal(serverVersionAtLeast('2.11.99'), false);
  assert.equal(serverVersionAtLeast('2.12.0'), true);
  assert.equal(serverVersionAtLeast('2.15.1'), true);
  assert.equal(serverVersionAtLeast('3.0.0'), true);
  assert.equal(serverVersionAtLeast('unknown'), false);
});

test('an old server: an error with replicated state, a warning without, nothing when new', () => {
  const r3 = serverVersionProblem('2.9.10', 3);
  assert.ok(r3 && 'error' in r3 && isDroverError(r3.error, 'FAILED_PRECONDITION'));
  assert.match(r3.error.message, /older than 2\.12\.0.*setup-host\.sh/);
  const r1 = serverVersionProblem('2.10.26', 1);
  assert.ok(r1 && 'warning' in r1 && /older than 2\.12\.0/.test(r1.warning));
  assert.equal(serverVersionProblem('2.15.1', 3), null);
});
