import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SyscallError } from './errors.js';
import { closeFd } from './fd.js';
import { libc } from './libc.js';
import {
  isChildSubreaper,
  pidfdOpen,
  pidfdSendSignal,
  setChildSubreaper,
  waitForExit,
  waitidPidfd,
} from './process.js';

// Node reaps every child it spawns itself (libuv's SIGCHLD handler calls waitpid on their PIDs),
// which races any waitid of ours. So the processes under test are grandchildren: `sh` starts
// them in the background and exits; with PR_SET_CHILD_SUBREAPER they are reparented to this
// process, which Node does not know as its children and never reaps.

let dir = '';
let gate = '';
let gateFd = -1;
/** pidfds of every process started here: killed, reaped and closed after each test. */
const started: number[] = [];

before(() => {
  assert.equal(isChildSubreaper(), false);
  dir = mkdtempSync(join(tmpdir(), 'drover-native-'));
  gate = join(dir, 'gate');
  execFileSync('mkfifo', [gate]);
  // O_RDWR: never blocks, and keeps the FIFO open so readers wait for lines, not for a writer.
  gateFd = openSync(gate, 'r+');
});
afterEach(async () => {
  for (const pidfd of started.splice(0)) {
    try {
      pidfdSendSignal(pidfd, 'SIGKILL');
    } catch {
      // already gone
    }
    for (let i = 0; i < 200; i++) {
      try {
        if (waitidPidfd(pidfd, { nohang: true }) !== null) break;
      } catch {
        break; // ECHILD: not ours, or already reaped
      }
      await sleep(10);
    }
    closeFd(pidfd);
  }
  setChildSubreaper(false);
});
after(() => {
  closeSync(gateFd);
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Start `script` as an orphan: `sh` runs it in the background, prints its PID and exits.
 * @returns a pidfd for the orphan (opened after `sh` exited, so it is reparented already).
 */
async function startOrphan(script: string): Promise<{ pid: number; pidfd: number }> {
  const sh = spawn('/bin/sh', ['-c', `${script} >/dev/null 2>&1 & echo $!`], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, GATE: gate },
  });
  let out = '';
  sh.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  await Promise.all([once(sh, 'exit'), once(sh.stdout, 'end')]);
  const pid = Number(out.trim());
  assert.ok(Number.isInteger(pid) && pid > 0, `orphan pid from sh: ${out}`);
  const pidfd = pidfdOpen(pid);
  started.push(pidfd);
  return { pid, pidfd };
}

test('PR_SET_CHILD_SUBREAPER reads back as set, then as cleared', () => {
  setChildSubreaper(true);
  assert.equal(isChildSubreaper(), true);
  setChildSubreaper(false);
  assert.equal(isChildSubreaper(), false);
});

test(
  'siginfo_t offsets match the x86_64/aarch64 ABI',
  { skip: !['x64', 'arm64'].includes(process.arch) },
  () => {
    assert.deepEqual(libc().siginfo, { size: 128, code: 8, pid: 16, status: 24 });
  },
);

test('pidfdOpen on a missing PID is SyscallError ESRCH naming pidfd_open', () => {
  // PIDs above /proc/sys/kernel/pid_max (at most 2^22) never exist.
  assert.throws(
    () => pidfdOpen(4_194_305),
    (e: unknown) =>
      e instanceof SyscallError &&
      e.syscall === 'pidfd_open' &&
      e.errnoName === 'ESRCH' &&
      e.message === 'pidfd_open(4194305): ESRCH (No such process)',
  );
  assert.throws(() => pidfdOpen(0), { code: 'INVALID_ARGUMENT' });
});

test('pidfdSendSignal delivers by name and by number', async () => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  assert.ok(child.pid !== undefined);
  const pidfd = pidfdOpen(child.pid);
  try {
    pidfdSendSignal(pidfd, 0); // existence check only
    pidfdSendSignal(pidfd, 'SIGUSR1');
    const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    assert.deepEqual([code, signal], [null, 'SIGUSR1']);
    assert.throws(
      () => pidfdSendSignal(pidfd, 9),
      (e: unknown) =>
        e instanceof SyscallError && e.syscall === 'pidfd_send_signal' && e.errnoName === 'ESRCH',
    );
    assert.throws(() => pidfdSendSignal(pidfd, 'SIGNOPE' as NodeJS.Signals), {
      code: 'INVALID_ARGUMENT',
    });
  } finally {
    closeFd(pidfd);
  }
});

test('waitidPidfd: null with nohang while running, exit code 3 after, nowait leaves it waitable', async () => {
  setChildSubreaper(true);
  const { pid, pidfd } = await startOrphan(`sh -c 'read _ <"$GATE"; exit 3'`);
  assert.equal(waitidPidfd(pidfd, { nohang: true }), null);
  await sleep(50);
  assert.equal(waitidPidfd(pidfd, { nohang: true }), null);
  writeSync(gateFd, '\n');
  const expected = { pid, exitCode: 3, signal: null, coreDumped: false };
  // Blocking wait, with WNOWAIT: the process exits as soon as it reads its line.
  assert.deepEqual(waitidPidfd(pidfd, { nowait: true }), expected);
  assert.deepEqual(waitidPidfd(pidfd, { nohang: true }), expected);
  assert.throws(
    () => waitidPidfd(pidfd, { nohang: true }),
    (e: unknown) => e instanceof SyscallError && e.syscall === 'waitid' && e.errnoName === 'ECHILD',
  );
});

test('waitForExit reports SIGTERM sent through the pidfd to a (reparented) sleep', async () => {
  setChildSubreaper(true);
  const { pid, pidfd } = await startOrphan('sleep 30');
  assert.equal(waitidPidfd(pidfd, { nohang: true }), null);
  const exited = waitForExit(pidfd);
  let settled = false;
  void exited.then(() => (settled = true));
  await sleep(50);
  assert.equal(settled, false, 'still running');
  pidfdSendSignal(pidfd, 'SIGTERM');
  assert.deepEqual(await exited, { pid, exitCode: null, signal: 'SIGTERM', coreDumped: false });
});

test('waitForExit on a process that is not our child resolves with an unknown status', async () => {
  // Not a subreaper: the orphan goes to PID 1 (or whichever ancestor is a subreaper).
  const { pid, pidfd } = await startOrphan('sleep 30');
  assert.throws(() => waitidPidfd(pidfd, { nohang: true }), { errnoName: 'ECHILD' });
  const exited = waitForExit(pidfd);
  pidfdSendSignal(pidfd, 'SIGKILL');
  assert.deepEqual(await exited, { pid, exitCode: null, signal: null, coreDumped: false });
});

test('waitForExit rejects for an fd that is not a pidfd', async () => {
  const fd = openSync('/dev/null', 'r');
  try {
    await assert.rejects(waitForExit(fd), { code: 'INVALID_ARGUMENT' });
  } finally {
    closeSync(fd);
  }
  await assert.rejects(waitForExit(987654), { code: 'SYSCALL', errnoName: 'ENOENT' });
});
