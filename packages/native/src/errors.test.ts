import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError, ErrorCode, isDroverError } from '@drover/common';
import { getErrnoName, SyscallError } from './errors.js';
import { closeFd } from './fd.js';
import { libc } from './libc.js';

test('getErrnoName maps Linux errno values, preferring the canonical alias', () => {
  assert.equal(getErrnoName(1), 'EPERM');
  assert.equal(getErrnoName(3), 'ESRCH');
  assert.equal(getErrnoName(10), 'ECHILD');
  assert.equal(getErrnoName(11), 'EAGAIN');
  assert.equal(getErrnoName(95), 'EOPNOTSUPP');
  assert.equal(getErrnoName(117), 'EUCLEAN');
  assert.equal(getErrnoName(4095), 'E4095');
});

test('SyscallError carries syscall, errno, name, code and the strerror text', () => {
  const err = new SyscallError('pidfd_open', 3, { args: '12345', description: 'No such process' });
  assert.ok(err instanceof DroverError);
  assert.ok(isDroverError(err, ErrorCode.Syscall));
  assert.equal(err.name, 'SyscallError');
  assert.equal(err.message, 'pidfd_open(12345): ESRCH (No such process)');
  assert.equal(err.syscall, 'pidfd_open');
  assert.equal(err.errno, 3);
  assert.equal(err.errnoName, 'ESRCH');
  assert.equal(err.retryable, false);
  assert.deepEqual(err.details, { syscall: 'pidfd_open', errno: 3, errnoName: 'ESRCH' });
  assert.equal(new SyscallError('sendmsg', 11).retryable, true);
});

test('a failing libc call is reported with the errno it set', () => {
  assert.equal(libc().strerror(9), 'Bad file descriptor');
  assert.throws(
    () => closeFd(987654),
    (err: unknown) =>
      err instanceof SyscallError &&
      err.syscall === 'close' &&
      err.errnoName === 'EBADF' &&
      err.message === 'close(987654): EBADF (Bad file descriptor)',
  );
});
