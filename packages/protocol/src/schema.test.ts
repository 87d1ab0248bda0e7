import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import { AgentOps, isAgentOp } from './agent-api.js';
import { decodeJson, decodeReply, failReply, MAX_MESSAGE_BYTES, okReply } from './envelope.js';
import { errorToFailure, failureToError } from './failure.js';
import { arr, bool, dict, int, obj, oneOf, opt, str } from './schema.js';
import { DroverError, ErrorCode } from '@drover/common';

const invalid = (f: () => unknown, path: RegExp): void => {
  assert.throws(f, (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT') && path.test(e.message));
};

test('objects are strict: types, bounds, required and unknown fields', () => {
  const s = obj({
    a: int({ min: 1, max: 5 }),
    b: opt(str({ max: 3 })),
    c: arr(bool(), { max: 2 }),
  });
  assert.deepEqual(s.parse({ a: 2, c: [true] }), { a: 2, c: [true] });
  invalid(() => s.parse({ a: 0, c: [] }), /^a: out of range/);
  invalid(() => s.parse({ a: 1.5, c: [] }), /^a: expected integer/);
  invalid(() => s.parse({ c: [] }), /^a: is required/);
  invalid(() => s.parse({ a: 1, c: [], d: 1 }), /^d: unknown field/);
  invalid(() => s.parse({ a: 1, b: 'long', c: [] }), /^b: longer than 3/);
  invalid(() => s.parse({ a: 1, c: [true, true, true] }), /^c: more than 2/);
  invalid(() => s.parse({ a: 1, c: ['x'] }), /^c\[0\]: expected boolean/);
  invalid(() => s.parse(null), /expected object, got null/);
  invalid(() => s.parse([]), /expected object, got array/);
});

test('strings refuse NUL and patterns; maps bound their keys', () => {
  invalid(() => str().parse('a\0b'), /NUL/);
  invalid(() => str({ pattern: /^x/ }).parse('y'), /does not match/);
  invalid(() => oneOf(['a', 'b'] as const).parse('c'), /one of a, b/);
  const d = dict(int(), { maxKeys: 1 });
  assert.deepEqual({ ...d.parse({ k: 1 }) }, { k: 1 });
  invalid(() => d.parse({ a: 1, b: 2 }), /more than 1 keys/);
});

test('agent requests: ids cannot escape, commands are bounded', () => {
  assert.ok(isAgentOp('run') && !isAgentOp('__proto__') && !isAgentOp('nope'));
  invalid(() => AgentOps.inspect.parse({ jobId: '../etc' }), /jobId: does not match/);
  invalid(() => AgentOps.run.parse({ command: [] }), /command: fewer than 1/);
  invalid(() => AgentOps.run.parse({ command: ['x'], env: { 'A=B': 'x' } }), /env\{key\}/);
  invalid(() => AgentOps.run.parse({ command: ['x'], cwd: 'rel' }), /cwd/);
  invalid(() => AgentOps.signal.parse({ jobId: 'j', signal: 'SIGSEGV' }), /signal/);
  assert.deepEqual(AgentOps.run.parse({ command: ['sleep', '1'], memoryLimitBytes: 64 << 20 }), {
    command: ['sleep', '1'],
    memoryLimitBytes: 64 << 20,
  });
});

test('failures cross the wire and come back as typed errors with their causes', () => {
  const err = new DroverError(ErrorCode.Criu, 'dump failed', {
    retryable: true,
    details: { logTail: ['a'] },
    cause: new DroverError(ErrorCode.Syscall, 'ESRCH'),
  });
  const back = failureToError(JSON.parse(JSON.stringify(errorToFailure(err))));
  assert.equal(back.code, 'CRIU');
  assert.equal(back.retryable, true);
  assert.deepEqual(back.details.logTail, ['a']);
  assert.equal((back.cause as DroverError).code, 'SYSCALL');
  assert.equal(
    failureToError({ code: 'BOGUS' as never, message: 'x', retryable: false, details: {} }).code,
    'INTERNAL',
  );
  assert.equal(errorToFailure(new TypeError('plain')).code, 'INTERNAL');
});

test('envelopes: ok, failure, oversized and malformed', () => {
  assert.deepEqual(decodeReply(okReply({ a: 1 })), { a: 1 });
  assert.throws(
    () => decodeReply(failReply(new DroverError(ErrorCode.NotFound, 'no job'))),
    (e: unknown) => isDroverError(e, 'NOT_FOUND'),
  );
  invalid(() => decodeJson(new TextEncoder().encode('{nope')), /not valid JSON/);
  invalid(() => decodeJson(new Uint8Array(MAX_MESSAGE_BYTES + 1)), /larger than/);
  assert.throws(
    () => decodeReply(new TextEncoder().encode('{"ok":"maybe"}')),
    (e: unknown) => isDroverError(e, 'INTERNAL'),
  );
});

test('hostile input: huge keys, prototype keys, paths with .., oversized replies stay bounded', () => {
  const big = `{"${'k'.repeat(900_000)}":1}`;
  let failure: unknown;
  try {
    AgentOps.info.parse(decodeJson(Buffer.from(big)));
  } catch (err) {
    failure = err;
  }
  assert.ok(isDroverError(failure, 'INVALID_ARGUMENT'));
  assert.ok(failReply(failure).byteLength < 8192);
  invalid(
    () => AgentOps.run.parse(JSON.parse('{"command":["x"],"env":{"__proto__":"1"}}')),
    /env\{key\}: key __proto__ is not allowed/,
  );
  invalid(() => AgentOps.run.parse({ command: ['x'], cwd: '/srv/../etc' }), /^cwd: does not match/);
  invalid(() => AgentOps.run.parse({ command: ['x'], cwd: '/a//b' }), /^cwd: does not match/);
  assert.equal(AgentOps.run.parse({ command: ['x'], cwd: '/a/.b/c/' }).cwd, '/a/.b/c/');
  const huge = decodeReply(okReply('x'.repeat(10)));
  assert.equal(huge, 'x'.repeat(10));
  assert.throws(
    () => decodeReply(okReply('x'.repeat(MAX_MESSAGE_BYTES))),
    (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'),
  );
  const f = errorToFailure(
    new DroverError(ErrorCode.Internal, 'x', { details: { blob: 'y'.repeat(100_000) } }),
  );
  assert.ok(JSON.stringify(f).length < 1000);
});
