import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readlinkSync } from 'node:fs';
import { SyscallError } from './errors.js';
import { NamespaceType, setns } from './namespace.js';

const isSetnsError = (errnoName: string) => (e: unknown) =>
  e instanceof SyscallError && e.syscall === 'setns' && e.errnoName === errnoName;

test('setns joins our own net namespace, checking the type when given', () => {
  const before = readlinkSync('/proc/thread-self/ns/net');
  const fd = openSync('/proc/self/ns/net', 'r');
  try {
    setns(fd, NamespaceType.CLONE_NEWNET);
    setns(fd);
    // The kernel checks nstype against the fd's kind: proof that the argument gets through.
    assert.throws(() => setns(fd, NamespaceType.CLONE_NEWUTS), isSetnsError('EINVAL'));
    assert.throws(() => setns(fd, NamespaceType.CLONE_NEWUTS), {
      message: `setns(${fd}, CLONE_NEWUTS): EINVAL (Invalid argument)`,
    });
  } finally {
    closeSync(fd);
  }
  assert.equal(readlinkSync('/proc/thread-self/ns/net'), before);
});

test('setns on a bad fd is EBADF; on a non-namespace fd EINVAL', () => {
  assert.throws(() => setns(987654, NamespaceType.CLONE_NEWNET), isSetnsError('EBADF'));
  const fd = openSync('/dev/null', 'r');
  try {
    assert.throws(() => setns(fd, NamespaceType.CLONE_NEWNET), isSetnsError('EINVAL'));
  } finally {
    closeSync(fd);
  }
});

test('NamespaceType holds the kernel CLONE_NEW* values', () => {
  assert.equal(NamespaceType.CLONE_NEWNS, 0x20000);
  assert.equal(NamespaceType.CLONE_NEWNET, 0x40000000);
  assert.equal(NamespaceType.CLONE_NEWPID, 0x20000000);
  assert.equal(NamespaceType.CLONE_NEWUSER, 0x10000000);
});
