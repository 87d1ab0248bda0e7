/** `run` waits for the command's exec and tells a failed exec from a command that exited. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { confirmStart, hasExeced, WRAPPER_NAME } from './job-start.js';
import { JobStore } from './job-store.js';

// The shape of a job: a root (tini's place) whose child is the wrapper shell named drover-job,
// whose child execs the command; the wrapper writes the exit status into the job directory.
// As job-runtime.ts writes it: the status through a temporary file and `mv`, a second child.
const WRAPPER = `(exec "$@"); st=$?; printf '%s\\n' "$st" > "$JOB_DIR/exit-status.tmp" && mv -f "$JOB_DIR/exit-status.tmp" "$JOB_DIR/exit-status"; exit $st`;

async function start(command: string[]): Promise<{
  store: JobStore;
  base: string;
  rootPid: number;
  kill: () => void;
}> {
  const base = mkdtempSync(join(tmpdir(), 'drover-start-'));
  const store = new JobStore(base);
  await store.init();
  const dir = await store.createJobDir('job-1');
  const err = openSync(join(dir, 'stderr.log'), 'a');
  const root = spawn(
    '/bin/sh',
    ['-c', `/bin/sh -c "$WRAPPER" ${WRAPPER_NAME} "$@"; sleep 0.3`, 'root', ...command],
    {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', WRAPPER, JOB_DIR: dir },
      stdio: ['ignore', 'ignore', err],
    },
  );
  closeSync(err);
  return {
    store,
    base,
    rootPid: root.pid!,
    kill: () => {
      root.kill('SIGKILL');
    },
  };
}

test("a program that does not exist is a failed start, with the shell's reason", async () => {
  // Several times: the failed copy and the wrapper's `mv` come and go at different moments.
  for (let i = 0; i < 10; i++) {
    const j = await start(['/nonexistent/binary', '--flag']);
    try {
      const failed = await confirmStart(j.store, 'job-1', { rootPid: j.rootPid, mainPid: null });
      assert.deepEqual(failed, { reason: '/nonexistent/binary: not found', exitCode: 127 });
    } finally {
      j.kill();
      rmSync(j.base, { recursive: true, force: true });
    }
  }
});

test('a file that cannot be executed is a failed start (126)', async () => {
  const plain = join(mkdtempSync(join(tmpdir(), 'drover-plain-')), 'data.txt');
  writeFileSync(plain, 'not a program\n', { mode: 0o644 });
  const j = await start([plain]);
  try {
    const failed = await confirmStart(j.store, 'job-1', { rootPid: j.rootPid, mainPid: null });
    assert.equal(failed?.exitCode, 126);
    assert.equal(failed!.reason, `${plain}: Permission denied`);
  } finally {
    j.kill();
    rmSync(j.base, { recursive: true, force: true });
    rmSync(join(plain, '..'), { recursive: true, force: true });
  }
});

test("a command that started is confirmed once it exec'd; one that exits 127 itself is no failed start", async () => {
  const j = await start(['sleep', '5']);
  try {
    assert.equal(await confirmStart(j.store, 'job-1', { rootPid: j.rootPid, mainPid: null }), null);
  } finally {
    j.kill();
    rmSync(j.base, { recursive: true, force: true });
  }
  const k = await start(['/bin/sh', '-c', 'exit 127']);
  try {
    assert.equal(await confirmStart(k.store, 'job-1', { rootPid: k.rootPid, mainPid: null }), null);
  } finally {
    k.kill();
    rmSync(k.base, { recursive: true, force: true });
  }
});

test("exec is seen only in a live process whose command line left its parent's", () => {
  const wrapper = { cmdline: ['/bin/sh', '-c', 'WRAPPER', 'drover-job', 'redis-server'] };
  assert.equal(hasExeced({ state: 'S', cmdline: wrapper.cmdline }, wrapper), false);
  assert.equal(hasExeced({ state: 'S', cmdline: ['redis-server'] }, wrapper), true);
  // The copy whose exec failed, a zombie until its parent reaps it: nothing started.
  assert.equal(hasExeced({ state: 'Z', cmdline: [] }, wrapper), false);
  assert.equal(hasExeced({ state: 'R', cmdline: [] }, wrapper), false);
  assert.equal(hasExeced(null, wrapper), false);
  // The wrapper moving the exit status into place, after the command ended: not the command.
  const tmp = '/srv/drover/jobs/job-1/exit-status.tmp';
  const mv = { state: 'R', cmdline: ['mv', '-f', tmp, '/srv/drover/jobs/job-1/exit-status'] };
  assert.equal(hasExeced(mv, wrapper, tmp), false);
  assert.equal(hasExeced(mv, wrapper), true);
});
