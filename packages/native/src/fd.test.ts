import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants, fstatSync, openSync, readFileSync } from 'node:fs';
import { closeFd, setCloexec, setNonBlocking } from './fd.js';
import { SyscallError } from './errors.js';

const O_CLOEXEC = 0o2000000;

/** The open flags of our `fd` as the kernel reports them (octal `flags:` of fdinfo). */
function fdFlags(fd: number): number {
  const m = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  assert.ok(m?.[1] !== undefined);
  return parseInt(m[1], 8);
}

test('setNonBlocking turns O_NONBLOCK on and off', () => {
  const fd = openSync('/dev/null', 'r');
  try {
    assert.equal(fdFlags(fd) & constants.O_NONBLOCK, 0);
    setNonBlocking(fd, true);
    assert.equal(fdFlags(fd) & constants.O_NONBLOCK, constants.O_NONBLOCK);
    setNonBlocking(fd, true);
    assert.equal(fdFlags(fd) & constants.O_NONBLOCK, constants.O_NONBLOCK);
    setNonBlocking(fd, false);
    assert.equal(fdFlags(fd) & constants.O_NONBLOCK, 0);
  } finally {
    closeFd(fd);
  }
});

test('setCloexec turns FD_CLOEXEC on and off', () => {
  const fd = openSync('/dev/null', 'r');
  try {
    // Node opens files O_CLOEXEC.
    assert.equal(fdFlags(fd) & O_CLOEXEC, O_CLOEXEC);
    setCloexec(fd, false);
    assert.equal(fdFlags(fd) & O_CLOEXEC, 0);
    setCloexec(fd, true);
    assert.equal(fdFlags(fd) & O_CLOEXEC, O_CLOEXEC);
  } finally {
    closeFd(fd);
  }
});

test('closeFd closes, and a second close is EBADF', () => {
  const fd = openSync('/dev/null', 'r');
  closeFd(fd);
  assert.throws(() => fstatSync(fd), { code: 'EBADF' });
  assert.throws(
    () => closeFd(fd),
    (e: unknown) => e instanceof SyscallError && e.errnoName === 'EBADF',
  );
});

test('flag calls on a closed fd throw SyscallError EBADF naming fcntl', () => {
  const isBadFcntl = (e: unknown): boolean =>
    e instanceof SyscallError && e.syscall === 'fcntl' && e.errnoName === 'EBADF';
  assert.throws(() => setNonBlocking(987654, true), isBadFcntl);
  assert.throws(() => setCloexec(987654, true), isBadFcntl);
});
