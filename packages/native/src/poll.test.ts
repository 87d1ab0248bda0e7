import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { constants, openSync, closeSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { SyscallError } from './errors.js';
import { closeFd, setNonBlocking } from './fd.js';
import { watchReadable, type FdWatch, type ReadableEvent } from './poll.js';
import { recvmsg, sendmsg, socketpairSeqpacket } from './socket.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) {
    try {
      c();
    } catch {
      // already released by the test
    }
  }
});
/** A non-blocking socketpair, closed after the test. */
function pair(): [number, number] {
  const [a, b] = socketpairSeqpacket();
  cleanups.push(
    () => closeFd(a),
    () => closeFd(b),
  );
  setNonBlocking(b, true);
  return [a, b];
}
function watch(fd: number, onEvent: (ev: ReadableEvent) => void): FdWatch {
  const w = watchReadable(fd, onEvent);
  cleanups.push(() => w.stop());
  return w;
}

test('watchReadable fires when the peer sends, not before, and stop() is idempotent', async () => {
  const [a, b] = pair();
  const events: ReadableEvent[] = [];
  const got: string[] = [];
  let wake: () => void = () => {};
  const w = watch(b, (ev) => {
    events.push(ev);
    for (let m = recvmsg(b, 64); m !== null; m = recvmsg(b, 64)) got.push(m.data.toString());
    wake();
  });
  await sleep(50);
  assert.equal(events.length, 0);
  const arrived = new Promise<void>((resolve) => (wake = resolve));
  sendmsg(a, Buffer.from('ping'));
  await arrived;
  assert.deepEqual(got, ['ping']);
  assert.equal(events[0]?.readable, true);
  assert.equal(events[0]?.disconnect, false);
  w.stop();
  w.stop();
  w.unref();
  w.ref();
  sendmsg(a, Buffer.from('unseen'));
  await sleep(50);
  assert.equal(events.length, 1);
  assert.equal(recvmsg(b, 64)?.data.toString(), 'unseen');
});

test('watchReadable reports the peer closing as readable + disconnect, then recvmsg eof', async () => {
  const [a, b] = pair();
  const ev = await new Promise<ReadableEvent>((resolve) => {
    const w = watch(b, (e) => {
      w.stop();
      resolve(e);
    });
    closeFd(a);
  });
  assert.deepEqual(ev, { readable: true, disconnect: true });
  assert.equal(recvmsg(b, 64)?.eof, true);
});

test('one watch per fd; a stopped fd can be watched again', () => {
  const [, b] = pair();
  const w = watch(b, () => {});
  assert.throws(() => watchReadable(b, () => {}), { code: 'ALREADY_EXISTS' });
  w.stop();
  watch(b, () => {}).stop();
});

test('unwatchable fds are SyscallErrors, not a crash inside koffi', () => {
  const file = openSync('/etc/hostname', 'r');
  try {
    assert.throws(
      () => watchReadable(file, () => {}),
      (e: unknown) =>
        e instanceof SyscallError && e.syscall === 'epoll_ctl' && e.errnoName === 'EPERM',
    );
  } finally {
    closeSync(file);
  }
  assert.throws(
    () => watchReadable(987654, () => {}),
    (e: unknown) => e instanceof SyscallError && e.errnoName === 'EBADF',
  );
  assert.throws(() => watchReadable(-1, () => {}), { code: 'INVALID_ARGUMENT' });
});

test('watching makes the fd O_NONBLOCK (libuv does it)', () => {
  const [a] = pair();
  const flags = (): number =>
    parseInt(
      /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${a}`, 'utf8'))?.[1] ?? '',
      8,
    );
  assert.equal(flags() & constants.O_NONBLOCK, 0);
  watch(a, () => {}).stop();
  assert.equal(flags() & constants.O_NONBLOCK, constants.O_NONBLOCK);
});

/** Run a script that watches an idle socket; report whether it exited on its own within 2 s. */
function exitsOnItsOwn(body: string): Promise<boolean> {
  const mod = new URL('./mod.js', import.meta.url).href;
  const script = `import * as n from ${JSON.stringify(mod)};
const [a, b] = n.socketpairSeqpacket();
const w = n.watchReadable(b, () => {});
${body}`;
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', script],
      { timeout: 2000, killSignal: 'SIGKILL' },
      (err) => {
        if (err === null) resolve(true);
        else if (err.killed) resolve(false);
        else reject(err);
      },
    );
  });
}

test('a watch keeps the process alive unless unref()ed', async () => {
  assert.equal(await exitsOnItsOwn('w.unref();'), true);
  assert.equal(await exitsOnItsOwn('w.unref(); w.ref();'), false);
  assert.equal(await exitsOnItsOwn('w.stop(); w.stop();'), true);
});

test('closeFd on a just-watched fd stops the watch instead of aborting in libuv', async () => {
  const [a, b] = socketpairSeqpacket();
  cleanups.push(() => closeFd(a));
  let events = 0;
  const w = watchReadable(b, () => events++);
  closeFd(b);
  // Without closeFd stopping the watch, libuv's next turn hits epoll_ctl EBADF and aborts.
  await sleep(20);
  const [c, d] = socketpairSeqpacket();
  cleanups.push(
    () => closeFd(c),
    () => closeFd(d),
  );
  assert.ok(c === b || d === b, 'the lowest free fd number is reused');
  watch(b, () => {}).stop();
  w.stop();
  assert.equal(events, 0);
});
