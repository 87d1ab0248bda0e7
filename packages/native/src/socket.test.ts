import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  constants,
  fstatSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';
import { SyscallError } from './errors.js';
import { closeFd, setNonBlocking } from './fd.js';
import { libc } from './libc.js';
import { recvmsg, sendmsg, socketpairSeqpacket } from './socket.js';

const O_CLOEXEC = 0o2000000;
let dir = '';
let fdsBefore: string[] = [];
const open: number[] = [];

const openFds = (): string[] => readdirSync('/proc/self/fd').sort();
function fdFlags(fd: number): number {
  const m = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  assert.ok(m?.[1] !== undefined);
  return parseInt(m[1], 8);
}
/** A socketpair whose ends are closed after the test (unless the test closed them). */
function pair(cloexec = true): [number, number] {
  const p = socketpairSeqpacket({ cloexec });
  open.push(...p);
  return p;
}

before(() => {
  libc(); // load libc before the fd snapshot
  dir = mkdtempSync(join(tmpdir(), 'drover-native-'));
  fdsBefore = openFds();
});
afterEach(() => {
  for (const fd of open.splice(0)) {
    try {
      closeFd(fd);
    } catch {
      // closed by the test
    }
  }
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
  assert.deepEqual(openFds(), fdsBefore, 'every fd the tests opened is closed');
});

test(
  'koffi computes the x86_64/aarch64 msghdr and cmsghdr layouts',
  { skip: !['x64', 'arm64'].includes(process.arch) },
  () => {
    const { msghdr, cmsghdr } = libc().types;
    assert.equal(koffi.sizeof(msghdr), 56);
    assert.equal(koffi.offsetof(msghdr, 'msg_control'), 32);
    assert.equal(koffi.offsetof(msghdr, 'msg_flags'), 48);
    assert.equal(koffi.sizeof(cmsghdr), 16);
  },
);

test('socketpairSeqpacket gives two SEQPACKET ends, CLOEXEC unless asked otherwise', () => {
  const [a, b] = pair();
  assert.notEqual(a, b);
  assert.equal(fdFlags(a) & O_CLOEXEC, O_CLOEXEC);
  assert.equal(fdFlags(b) & O_CLOEXEC, O_CLOEXEC);
  const [c, d] = pair(false);
  assert.equal(fdFlags(c) & O_CLOEXEC, 0);
  assert.equal(fdFlags(d) & O_CLOEXEC, 0);
  // SEQPACKET keeps message boundaries (a stream socket would merge these two sends).
  assert.equal(sendmsg(a, Buffer.from('one')), 3);
  assert.equal(sendmsg(a, Buffer.from('three')), 5);
  assert.equal(recvmsg(b, 100)?.data.toString(), 'one');
  assert.equal(recvmsg(b, 100)?.data.toString(), 'three');
});

test('sendmsg/recvmsg carry bytes both ways, from a Uint8Array view at an offset', () => {
  const [a, b] = pair();
  const bytes = new Uint8Array([0, 1, 2, 0xfe, 0xff, 9]);
  assert.equal(sendmsg(a, bytes.subarray(2, 5)), 3);
  const got = recvmsg(b, 64);
  assert.deepEqual(got, {
    data: Buffer.from([2, 0xfe, 0xff]),
    fds: [],
    eof: false,
    truncated: false,
  });
  sendmsg(b, Buffer.from('reply'));
  assert.equal(recvmsg(a, 64)?.data.toString(), 'reply');
});

test('an fd passed with SCM_RIGHTS works on the receiving side and arrives CLOEXEC', () => {
  const [a, b] = pair();
  const fifo = join(dir, 'pipe');
  execFileSync('mkfifo', [fifo]);
  const readEnd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writeEnd = openSync(fifo, constants.O_WRONLY);
  const spare = openSync('/dev/null', 'r');
  let received: number[] = [];
  try {
    assert.equal(sendmsg(a, Buffer.from('x'), [writeEnd, spare]), 1);
    const got = recvmsg(b, 16, 4);
    assert.ok(got !== null);
    received = got.fds;
    closeSync(writeEnd);
    assert.equal(got.data.toString(), 'x');
    assert.equal(got.truncated, false);
    assert.equal(received.length, 2);
    const [w, n] = received as [number, number];
    assert.ok(w !== writeEnd && w !== spare && n !== writeEnd && n !== spare);
    assert.equal(fdFlags(w) & O_CLOEXEC, O_CLOEXEC);
    assert.equal(fstatSync(n).rdev, fstatSync(spare).rdev);
    writeSync(w, 'through the passed fd');
    const buf = Buffer.alloc(64);
    assert.equal(buf.toString('utf8', 0, readSync(readEnd, buf)), 'through the passed fd');
    // The received fd was the last writer: closing it gives the reader EOF.
    closeFd(w);
    received = [n];
    assert.equal(readSync(readEnd, buf), 0);
  } finally {
    for (const fd of received) closeFd(fd);
    closeSync(readEnd);
    closeSync(spare);
  }
});

test('recvmsg reports truncation of data and of descriptors', () => {
  const [a, b] = pair();
  sendmsg(a, Buffer.from('0123456789'));
  assert.deepEqual(recvmsg(b, 4), {
    data: Buffer.from('0123'),
    fds: [],
    eof: false,
    truncated: true,
  });
  const f = openSync('/dev/null', 'r');
  try {
    sendmsg(a, Buffer.from('y'), [f, f, f]);
    const got = recvmsg(b, 4, 1);
    assert.equal(got?.truncated, true);
    assert.equal(got?.fds.length, 1);
    for (const fd of got?.fds ?? []) closeFd(fd);
    sendmsg(a, Buffer.from('z'), [f]);
    assert.deepEqual(recvmsg(b, 4), {
      data: Buffer.from('z'),
      fds: [],
      eof: false,
      truncated: true,
    });
  } finally {
    closeSync(f);
  }
});

test('recvmsg on a non-blocking fd with nothing queued returns null', () => {
  const [a, b] = pair();
  setNonBlocking(b, true);
  assert.equal(recvmsg(b, 16), null);
  sendmsg(a, Buffer.from('now'));
  assert.equal(recvmsg(b, 16)?.data.toString(), 'now');
  assert.equal(recvmsg(b, 16), null);
});

test('eof after the peer closes; an empty message from a live peer is not eof', () => {
  const [a, b] = pair();
  setNonBlocking(b, true);
  sendmsg(a, new Uint8Array(0));
  assert.deepEqual(recvmsg(b, 16), {
    data: Buffer.alloc(0),
    fds: [],
    eof: false,
    truncated: false,
  });
  sendmsg(a, Buffer.from('last'));
  closeFd(a);
  assert.equal(recvmsg(b, 16)?.data.toString(), 'last');
  assert.deepEqual(recvmsg(b, 16), { data: Buffer.alloc(0), fds: [], eof: true, truncated: false });
  assert.equal(recvmsg(b, 16)?.eof, true);
});

test('sendmsg to a closed peer is EPIPE (MSG_NOSIGNAL), not SIGPIPE', () => {
  const [a, b] = pair();
  closeFd(b);
  assert.throws(
    () => sendmsg(a, Buffer.from('lost')),
    (e: unknown) => e instanceof SyscallError && e.syscall === 'sendmsg' && e.errnoName === 'EPIPE',
  );
});

test('sendmsg on a full non-blocking socket is a retryable EAGAIN', () => {
  const [a] = pair();
  setNonBlocking(a, true);
  const chunk = Buffer.alloc(4096);
  let err: unknown = null;
  for (let i = 0; i < 100_000 && err === null; i++) {
    try {
      sendmsg(a, chunk);
    } catch (e) {
      err = e;
    }
  }
  assert.ok(err instanceof SyscallError);
  assert.equal(err.errnoName, 'EAGAIN');
  assert.equal(err.retryable, true);
});

test('bad arguments are refused before any system call', () => {
  assert.throws(() => sendmsg(0, Buffer.alloc(1), [-1]), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => recvmsg(0, -1), { code: 'INVALID_ARGUMENT' });
  assert.throws(
    () => recvmsg(987654, 16),
    (e: unknown) => e instanceof SyscallError && e.syscall === 'recvmsg' && e.errnoName === 'EBADF',
  );
});
