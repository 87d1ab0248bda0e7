import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import { AgentOps, isAgentOp } from './agent-api.js';
import { ControllerOps } from './controller-api.js';
import { parseSignal } from './signals.js';
import { decodeJson, decodeReply, failReply, MAX_MESSAGE_BYTES, okReply } from './envelope.js';
import { errorToFailure, failureToError } from './failure.js';
import {
  arr,
  bool,
  dict,
  either,
  int,
  InvalidMessageError,
  obj,
  objWith,
  oneOf,
  opt,
  parseJsonAs,
  str,
} from './schema.js';
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
  invalid(() => s.parse({ a: 0, c: [] }), /^a: must be between 1 and 5 \(got 0\)/);
  invalid(() => s.parse({ a: 1.5, c: [] }), /^a: must be a whole number/);
  invalid(() => s.parse({ c: [] }), /^a: is required/);
  invalid(() => s.parse({ a: 1, c: [], d: 1 }), /^d: unknown field/);
  invalid(() => s.parse({ a: 1, b: 'long', c: [] }), /^b: is longer than 3/);
  invalid(() => s.parse({ a: 1, c: [true, true, true] }), /^c: has more than 2/);
  invalid(() => s.parse({ a: 1, c: ['x'] }), /^c\[0\]: expected boolean/);
  invalid(() => s.parse(null), /expected object, got null/);
  invalid(() => s.parse([]), /expected object, got array/);
});

test('strings refuse NUL and patterns; maps bound their keys', () => {
  invalid(() => str().parse('a\0b'), /NUL/);
  invalid(() => str({ pattern: /^x/ }).parse('y'), /is not in a form allowed here \(got "y"\)/);
  invalid(() => str({ pattern: /^x/, what: 'an x' }).parse('y'), /must be an x \(got "y"\)/);
  invalid(() => oneOf(['a', 'b'] as const).parse('c'), /one of a, b/);
  const d = dict(int(), { maxKeys: 1 });
  assert.deepEqual({ ...d.parse({ k: 1 }) }, { k: 1 });
  invalid(() => d.parse({ a: 1, b: 2 }), /more than 1 keys/);
});

test('agent requests: ids cannot escape, commands are bounded', () => {
  assert.ok(isAgentOp('run') && !isAgentOp('__proto__') && !isAgentOp('nope'));
  invalid(
    () => AgentOps.inspect.parse({ jobId: '../etc' }),
    /jobId: must be an id: 1 to 63 letters/,
  );
  invalid(() => AgentOps.run.parse({ command: [] }), /command: needs at least 1 item/);
  invalid(() => AgentOps.run.parse({ command: ['x'], env: { 'A=B': 'x' } }), /env\{key\}/);
  invalid(() => AgentOps.run.parse({ command: ['x'], cwd: 'rel' }), /cwd/);
  invalid(() => AgentOps.signal.parse({ jobId: 'j', signal: 'SIGNOPE' }), /signal: unknown signal/);
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
  invalid(
    () => AgentOps.run.parse({ command: ['x'], cwd: '/srv/../etc' }),
    /^cwd: must be an absolute path/,
  );
  invalid(
    () => AgentOps.run.parse({ command: ['x'], cwd: '/a//b' }),
    /^cwd: must be an absolute path/,
  );
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

test('signals by name with or without SIG, any case, by number, and real-time ones', () => {
  const n = (x: string | number): [string, number] => {
    const s = parseSignal(x);
    return [s.name, s.number];
  };
  assert.deepEqual(n('USR1'), ['SIGUSR1', 10]);
  assert.deepEqual(n('usr1'), ['SIGUSR1', 10]);
  assert.deepEqual(n('SigUsr1'), ['SIGUSR1', 10]);
  assert.deepEqual(n('SIGUSR1'), ['SIGUSR1', 10]);
  assert.deepEqual(n('10'), ['SIGUSR1', 10]);
  assert.deepEqual(n(9), ['SIGKILL', 9]);
  assert.deepEqual(n('term'), ['SIGTERM', 15]);
  assert.deepEqual(n('iot'), ['SIGABRT', 6]);
  assert.deepEqual(n('SIGRTMIN'), ['SIGRTMIN', 34]);
  assert.deepEqual(n('rtmin+3'), ['SIGRTMIN+3', 37]);
  assert.deepEqual(n('SIGRTMAX-1'), ['SIGRTMAX-1', 63]);
  assert.deepEqual(n('RTMAX'), ['SIGRTMAX', 64]);
  assert.deepEqual(n('40'), ['SIGRTMIN+6', 40]);
  assert.deepEqual(n('55'), ['SIGRTMAX-9', 55]);
  for (const bad of ['0', '32', '33', '65', 'NOPE', 'SIG', 'RTMIN+31', 'RTMAX+1', '-9', ''])
    assert.throws(
      () => parseSignal(bad),
      (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT') && /USR1/.test(e.message),
      bad,
    );
  // The wire carries the canonical name, whatever was typed.
  assert.equal(AgentOps.signal.parse({ jobId: 'j', signal: 'usr2' }).signal, 'SIGUSR2');
  assert.equal(ControllerOps.signal.parse({ jobId: 'j', signal: '35' }).signal, 'SIGRTMIN+1');
});

test('a command may have empty arguments, not an empty program', () => {
  assert.deepEqual(AgentOps.run.parse({ command: ['redis-server', '--save', ''] }).command, [
    'redis-server',
    '--save',
    '',
  ]);
  invalid(() => AgentOps.run.parse({ command: ['', 'x'] }), /^command\[0\]: the program/);
});

test('no validation error shows a regular expression', () => {
  const bad: [() => unknown, string][] = [
    [() => ControllerOps.run.parse({ command: ['x'], cwd: 'relative/dir' }), 'cwd'],
    [() => ControllerOps.run.parse({ command: ['x'], host: 'a b' }), 'host'],
    [() => ControllerOps.run.parse({ command: ['x'], hostname: '-x' }), 'hostname'],
    [() => ControllerOps.run.parse({ command: ['x'], env: { '1A': 'x' } }), 'env'],
    [() => ControllerOps.inspect.parse({ jobId: 'a/b' }), 'jobId'],
    [() => ControllerOps.audit.parse({ caller: 'a.b' }), 'caller'],
    [() => AgentOps['files-check'].parse({ files: [{ path: 'rel' }] }), 'files'],
  ];
  for (const [f, where] of bad) {
    let message = '';
    try {
      f();
    } catch (e) {
      message = (e as Error).message;
    }
    assert.ok(message.startsWith(where), message);
    assert.doesNotMatch(message, /\/\^|\$\/|\[A-Za-z|\(\?/, message);
  }
});

test('rollback errors and foreign causes survive the wire codec', () => {
  const first = new DroverError(ErrorCode.Criu, 'dump failed', {
    cause: Object.assign(new Error('open failed', { cause: new Error('disk gone') }), {
      code: 'ENOENT',
      syscall: 'open',
    }),
  });
  first.suppress(new DroverError(ErrorCode.Cgroup, 'thaw failed', { details: { state: 'x' } }));
  first.suppress(new Error('abort not delivered'));
  const back = failureToError(JSON.parse(JSON.stringify(errorToFailure(first))));
  assert.equal(back.suppressed.length, 2);
  assert.equal((back.suppressed[0] as DroverError).code, 'CGROUP');
  assert.deepEqual((back.suppressed[0] as DroverError).details.state, 'x');
  assert.equal((back.suppressed[1] as DroverError).message, 'abort not delivered');
  const cause = back.cause as DroverError;
  assert.equal(cause.message, 'open failed');
  assert.equal(cause.details.code, 'ENOENT');
  assert.equal((cause.cause as Error).message, 'disk gone');
});

test('either: the first schema that accepts; refused values name the deeper problem', () => {
  const s = either(arr(str()), str());
  assert.deepEqual(s.parse(['a', 'b']), ['a', 'b']);
  assert.equal(s.parse('a,b'), 'a,b');
  assert.throws(
    () => s.parse(7, 'servers'),
    /servers: expected array of string or string, got number$/,
  );
  assert.throws(() => s.parse(['a', 3], 'servers'), /servers\[1\]: expected text, got number/);
});

test('objWith: checks the fields it names and keeps the others as they are', () => {
  const s = objWith({ host: str({ min: 1 }) });
  assert.deepEqual(s.parse({ host: 'h1', extra: { a: 1 } }), { host: 'h1', extra: { a: 1 } });
  assert.throws(() => s.parse({ extra: 1 }, 'info'), /info\.host: is required/);
  assert.throws(() => s.parse([], 'info'), /info: expected object, got array/);
});

test('parseJsonAs: a document that does not fit is refused naming the document and the field', () => {
  const s = obj({ nats: opt(obj({ servers: opt(arr(str())) })), maxJobs: opt(int()) });
  assert.deepEqual(parseJsonAs(s, '{"maxJobs": 3}', 'agent config /x.json'), { maxJobs: 3 });
  const refused = (text: string, message: RegExp, path: string): void => {
    assert.throws(
      () => parseJsonAs(s, text, 'agent config /x.json'),
      (e) =>
        e instanceof InvalidMessageError &&
        isDroverError(e, ErrorCode.InvalidArgument) &&
        message.test(e.message) &&
        e.details['path'] === path,
      text,
    );
  };
  refused(
    '{"maxJobs": "3"}',
    /^agent config \/x\.json: maxJobs: must be a whole number/,
    'maxJobs',
  );
  refused('{"nats": {"servers": [1]}}', /: nats\.servers\[0\]: expected text/, 'nats.servers[0]');
  refused('{"maxjobs": 3}', /: maxjobs: unknown field$/, 'maxjobs');
  refused('{"maxJobs": ', /^agent config \/x\.json: /, '');
});
