/**
 * A job's start and its main process, with real namespaces and processes (no CRIU): the wrapper
 * names the main process, --until all and --main-pidfile keep daemons' jobs alive, -t gives a
 * terminal of the job's own devpts, and signals reach the main process (or, once it is gone,
 * every process of the job but its init and wrapper).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isSameLiveProcess, procEntry, processTree } from '@drover/native';
import { JobKind, JobState } from '@drover/protocol';
import { resolveMain, signalTargets } from './job-main.js';
import { startNamespacedJob, type StartedJob } from './job-runtime.js';
import { JobStore, type JobRecord } from './job-store.js';
import { confirmStart } from './job-start.js';
import { writeTtyInput } from './job-tty.js';

const base = mkdtempSync(join(tmpdir(), 'drover-runtime-'));
const roots: number[] = [];
after(() => {
  for (const pid of roots) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  rmSync(base, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function start(
  name: string,
  command: string[],
  wrapper: { until?: 'main' | 'all'; mainPidfile?: string; tty?: boolean } = {},
): Promise<{ started: StartedJob; record: JobRecord }> {
  const jobDir = join(base, name);
  const { mkdirSync, writeFileSync } = await import('node:fs');
  mkdirSync(jobDir);
  writeFileSync(join(jobDir, 'stdout.log'), '');
  writeFileSync(join(jobDir, 'stderr.log'), '');
  const started = await startNamespacedJob({
    command,
    env: {},
    cwd: '/',
    hostname: name,
    jobDir,
    cgroupProcsFiles: [],
    wrapper: {
      until: wrapper.until ?? 'main',
      mainPidfile: wrapper.mainPidfile ?? null,
      tty: wrapper.tty ?? false,
    },
  });
  started.launcher.unref();
  if (started.rootPid !== null) roots.push(started.rootPid);
  const record = {
    id: name,
    kind: JobKind.namespaced,
    state: JobState.running,
    jobDir,
    rootPid: started.rootPid,
    rootStartTicks: started.rootStartTicks,
    mainPid: started.mainPid,
    mainPidInside: started.mainPidInside,
    mainStartTicks: started.mainStartTicks,
  } as JobRecord;
  return { started, record };
}

async function until<T>(
  get: () => Promise<T | undefined> | T | undefined,
  ms = 10_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(20);
  }
}

const cmdline = (pid: number | null): string =>
  pid === null ? '' : (procEntry(pid)?.cmdline.join(' ') ?? '');

test('the command is the main process, named by its PID inside the job, next to an orphaned sibling', async () => {
  const { record } = await start('orphan', ['/bin/sh', '-c', '(sleep 1000 &); exec sleep 2000']);
  // It names itself just before it execs the command.
  await until(() => (cmdline(record.mainPid) === 'sleep 2000' ? true : undefined));
  assert.equal(
    readFileSync(join(record.jobDir, 'main-pid'), 'utf8').trim(),
    String(record.mainPidInside),
  );
  // Whatever the record says, the main process is found again from the inside PID.
  const m = await resolveMain({ ...record, mainPid: null, mainStartTicks: null });
  assert.equal(m.mainPid, record.mainPid);
  assert.ok(isSameLiveProcess(m.mainPid!, m.mainStartTicks));
  assert.deepEqual(signalTargets(record), [record.mainPid]);
});

test('the job has its own devpts: its first terminal is pts/0, and -t puts the command on one', async () => {
  const { record } = await start(
    'tty',
    ['/bin/sh', '-c', 'tty; test -t 0 && echo stdin-is-a-tty; exec sleep 1000'],
    {
      tty: true,
    },
  );
  const out = await until(() => {
    const s = readFileSync(join(record.jobDir, 'stdout.log'), 'utf8');
    return s.includes('stdin-is-a-tty') ? s : undefined;
  });
  assert.match(out, /^\/dev\/pts\/0\r?$/m);
  await until(() => (cmdline(record.mainPid) === 'sleep 1000' ? true : undefined));
  const mounts = readFileSync(`/proc/${record.rootPid}/mountinfo`, 'utf8');
  assert.match(mounts, / \/dev\/pts rw[^\n]* - devpts devpts [^\n]*ptmxmode=666/);
  assert.match(mounts, / \/ptmx \/dev\/ptmx /);
});

/** Wait until job `started` has ended; its recorded exit status. */
async function ended(started: StartedJob, jobDir: string, ms = 15_000): Promise<string> {
  await until(
    () => (isSameLiveProcess(started.rootPid!, started.rootStartTicks) ? undefined : true),
    ms,
  );
  return readFileSync(join(jobDir, 'exit-status'), 'utf8').trim();
}

describe('-t: the terminal relay', () => {
  test("the job ends with its command, with the command's exit status", async () => {
    const { record, started } = await start('tty-exit', ['/bin/sh', '-c', 'echo bye; exit 3'], {
      tty: true,
    });
    assert.equal(await ended(started, record.jobDir), '3');
    assert.match(readFileSync(join(record.jobDir, 'stdout.log'), 'utf8'), /^bye\r$/m);
  });

  test('a command killed by a signal: 128 + the signal, as a shell says', async () => {
    const { record, started } = await start('tty-signal', ['sleep', '1000'], { tty: true });
    await until(() => (cmdline(record.mainPid) === 'sleep 1000' ? true : undefined));
    process.kill(record.mainPid!, 'SIGTERM');
    assert.equal(await ended(started, record.jobDir), '143');
  });

  test('input reaches the command; input it does not read never stops its output', async () => {
    const { record, started } = await start(
      'tty-input',
      ['/bin/sh', '-c', 'read -r l; echo "GOT $l"; sleep 0.5; seq 1 20000; exit 5'],
      { tty: true },
    );
    await until(() => (cmdline(record.mainPid).startsWith('/bin/sh') ? true : undefined));
    const r = { ...record, tty: true } as JobRecord;
    assert.equal(await writeTtyInput(r, 'hello\n'), 6);
    await until(() =>
      /^GOT hello\r$/m.test(readFileSync(join(record.jobDir, 'stdout.log'), 'utf8'))
        ? true
        : undefined,
    );
    // Far more than a terminal's input queue (4 KiB) that the command never reads: a relay
    // that blocked writing it would stop copying the output, and the command would block too.
    for (let i = 0; i < 8; i++) await writeTtyInput(r, `${'x'.repeat(4095)}\n`);
    assert.equal(await ended(started, record.jobDir), '5');
    assert.match(readFileSync(join(record.jobDir, 'stdout.log'), 'utf8'), /^20000\r$/m);
  });
});

describe("run waits for the command's exec (job-start.ts), with the real wrapper", () => {
  async function startIn(
    name: string,
    command: string[],
    tty: boolean,
  ): Promise<{ store: JobStore; started: StartedJob }> {
    const store = new JobStore(join(base, `state-${name}`));
    await store.init();
    const jobDir = await store.createJobDir(name);
    writeFileSync(join(jobDir, 'stdout.log'), '');
    writeFileSync(join(jobDir, 'stderr.log'), '');
    const started = await startNamespacedJob({
      command,
      env: {},
      cwd: '/',
      hostname: name,
      jobDir,
      cgroupProcsFiles: [],
      wrapper: { until: 'main', mainPidfile: null, tty },
    });
    started.launcher.unref();
    if (started.rootPid !== null) roots.push(started.rootPid);
    return { store, started };
  }

  for (const tty of [false, true]) {
    const on = tty ? ' (on a terminal)' : '';
    test(`a program that does not exist is a failed start, with the shell's reason${on}`, async () => {
      const name = `noexec-${tty ? 't' : 'p'}`;
      const { store, started } = await startIn(name, ['/nonexistent/binary', '-x'], tty);
      assert.deepEqual(await confirmStart(store, name, started), {
        reason: '/nonexistent/binary: not found',
        exitCode: 127,
      });
    });

    test(`the same when the start did not learn the main process in time (a loaded machine)${on}`, async () => {
      // The main process found from the tree alone: the wrapper's copy, the relay and the shell
      // on the terminal are not the command; its failed exec is still reported.
      const name = `noexec-late-${tty ? 't' : 'p'}`;
      const { store, started } = await startIn(name, ['/nonexistent/binary', '-x'], tty);
      assert.deepEqual(await confirmStart(store, name, { ...started, mainPid: null }), {
        reason: '/nonexistent/binary: not found',
        exitCode: 127,
      });
      const ok = `exec-late-${tty ? 't' : 'p'}`;
      const run = await startIn(ok, ['sleep', '1000'], tty);
      assert.equal(await confirmStart(run.store, ok, { ...run.started, mainPid: null }), null);
    });

    test(`a command that starts: run answers once it has exec'd${on}`, async () => {
      const name = `exec-${tty ? 't' : 'p'}`;
      const { store, started } = await startIn(name, ['sleep', '1000'], tty);
      assert.equal(await confirmStart(store, name, started), null);
      assert.equal(cmdline(started.mainPid), 'sleep 1000');
    });
  }
});

test('--until all: the job outlives its command while a process of it is left; signals reach them', async () => {
  const { record, started } = await start('all', ['/bin/sh', '-c', 'sleep 1000 & exit 3'], {
    until: 'all',
  });
  // The command is gone, the job is not: no main process, and the signal goes to `sleep 1000`
  // (once the command has been reaped: while it exits it is still in the tree for an instant).
  const m = await until(async () => {
    const x = await resolveMain(record);
    return x.mainPid === null &&
      signalTargets({ ...record, ...x })
        .map(cmdline)
        .join() === 'sleep 1000'
      ? x
      : undefined;
  });
  Object.assign(record, m);
  const targets = signalTargets(record);
  assert.deepEqual(targets.map(cmdline), ['sleep 1000']);
  assert.ok(isSameLiveProcess(started.rootPid!, started.rootStartTicks));
  process.kill(targets[0]!, 'SIGTERM');
  await until(() =>
    isSameLiveProcess(started.rootPid!, started.rootStartTicks) ? undefined : true,
  );
  assert.equal(readFileSync(join(record.jobDir, 'exit-status'), 'utf8').trim(), '3');
});

test('by default (--until main) the job ends with its command, background processes or not', async () => {
  const { started, record } = await start('main', ['/bin/sh', '-c', 'sleep 1000 & exit 0']);
  await until(() =>
    isSameLiveProcess(started.rootPid!, started.rootStartTicks) ? undefined : true,
  );
  assert.equal(readFileSync(join(record.jobDir, 'exit-status'), 'utf8').trim(), '0');
});

test('--main-pidfile: once the launcher exits, the PID it wrote is the main process', async () => {
  const pidfile = join(base, 'daemon.pid');
  const { record, started } = await start(
    'pidfile',
    ['/bin/sh', '-c', `sleep 1000 & echo $! > ${pidfile}; exit 0`],
    { mainPidfile: pidfile },
  );
  const m = await until(async () => {
    const x = await resolveMain(record);
    return x.mainPid !== null && cmdline(x.mainPid) === 'sleep 1000' ? x : undefined;
  });
  assert.equal(String(m.mainPidInside), readFileSync(pidfile, 'utf8').trim());
  process.kill(m.mainPid!, 'SIGTERM');
  await until(() =>
    isSameLiveProcess(started.rootPid!, started.rootStartTicks) ? undefined : true,
  );
  assert.equal(readFileSync(join(record.jobDir, 'exit-status'), 'utf8').trim(), '0');
  // Nothing of the job is left once its launcher has reaped tini (a zombie until then).
  await until(() => (processTree(started.rootPid!).length === 0 ? true : undefined));
});
