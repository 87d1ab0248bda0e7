/** Tests of cleanup after crashes and interruptions: exit/signal handlers and sweepLeftovers(). */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { leaks, removeRun, settleLeftovers, sweepLeftovers } from './cleanup.js';
import { isAlive } from './proc.js';
import { Testbed } from './testbed.js';

/**
 * A separate Node process that creates a testbed (2 hosts, single NATS, a process in h1), prints
 * its run id, then does `then`: 'hang' (until killed), 'exit' (process.exit without teardown),
 * 'detach' (hand the run over to its own processes and let the event loop end).
 */
function child(then: 'hang' | 'exit' | 'detach'): { proc: ChildProcess; runId: Promise<string> } {
  const code = `
    const { Testbed } = await import(process.argv[1]);
    const tb = await Testbed.create({ hosts: 2, nats: 'single' });
    await tb.host(1).spawn(['sleep', '1000']);
    if (process.argv[2] === 'detach') tb.detach();
    process.stdout.write(tb.runId + '\\n');
    if (process.argv[2] === 'exit') process.exit(3);
    if (process.argv[2] === 'hang') setInterval(() => {}, 1000);`;
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  delete env.NODE_OPTIONS;
  const proc = spawn(
    process.execPath,
    ['--input-type=module', '-e', code, new URL('./mod.js', import.meta.url).href, then],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
      env,
    },
  );
  const runId = new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^(drtb[0-9a-f]{6})$/m.exec(out);
      if (m?.[1]) resolve(m[1]);
    });
    proc.once('exit', (c, s) =>
      setTimeout(() => reject(new Error(`child exited ${c ?? s} before a run id: ${out}`)), 50),
    );
  });
  return { proc, runId };
}

const exitOf = (p: ChildProcess): Promise<[number | null, NodeJS.Signals | null]> =>
  p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve([p.exitCode, p.signalCode])
    : new Promise((r) => p.once('exit', (c, s) => r([c, s])));

test('SIGTERM and process.exit() tear a testbed down synchronously', async () => {
  const term = child('hang');
  const exit = child('exit');
  const [termRun, exitRun] = await Promise.all([term.runId, exit.runId]);
  assert.ok(
    leaks(termRun).some((l) => l.kind === 'netns'),
    'the child testbed exists',
  );
  term.proc.kill('SIGTERM');
  assert.deepEqual(await exitOf(term.proc), [null, 'SIGTERM'], 'the signal still ends the process');
  assert.deepEqual(await exitOf(exit.proc), [3, null]);
  assert.deepEqual(await settleLeftovers(termRun), []);
  assert.deepEqual(await settleLeftovers(exitRun), []);
});

test('sweepLeftovers() removes a crashed run and leaves live ones alone', async () => {
  const crashed = child('hang');
  const runId = await crashed.runId;
  crashed.proc.kill('SIGKILL'); // a crash: no handler runs, hosts and NATS keep running
  await exitOf(crashed.proc);
  const left = leaks(runId);
  const tinis = left.filter((l) => l.kind === 'process' && /^tini /.test(l.detail ?? ''));
  assert.equal(tinis.length, 2, `both hosts survive the crash: ${JSON.stringify(left)}`);
  assert.ok(left.some((l) => l.kind === 'process' && /^nats-server /.test(l.detail ?? '')));
  assert.ok(left.some((l) => l.kind === 'interface'));

  const live = await Testbed.create({ hosts: 1 });
  try {
    const report = await sweepLeftovers();
    assert.ok(report.swept.includes(runId), JSON.stringify(report));
    assert.ok(report.skipped.includes(live.runId), 'a live testbed of this process is skipped');
    assert.ok(!report.swept.includes(live.runId));
    assert.ok(report.killed.length >= 3, 'two tinis and a nats-server were killed');
    assert.deepEqual(await settleLeftovers(runId), []);
    // The live testbed is untouched.
    assert.ok(isAlive(live.host(1).initPid));
    assert.equal((await live.host(1).exec(['hostname'])).stdout.trim(), 'h1');
    assert.ok(live.leaks().some((l) => l.kind === 'netns'));
  } finally {
    await live.teardown();
  }
  assert.deepEqual(await settleLeftovers(live.runId), []);
});

test('a detached run outlives its creator; sweeps leave it alone; removeRun() removes it', async () => {
  const creator = child('detach');
  const runId = await creator.runId;
  try {
    // The creator's event loop ends by itself: detach() released every handle it held.
    const timer = setTimeout(() => creator.proc.kill('SIGKILL'), 20_000);
    assert.deepEqual(await exitOf(creator.proc), [0, null], 'the creator exits on its own');
    clearTimeout(timer);
    const left = leaks(runId);
    const tinis = left.filter((l) => l.kind === 'process' && /^tini /.test(l.detail ?? ''));
    assert.equal(tinis.length, 2, `both hosts outlive the creator: ${JSON.stringify(left)}`);
    assert.ok(left.some((l) => l.kind === 'process' && /^nats-server /.test(l.detail ?? '')));

    // Its owner is gone, but its keepers live: a sweep skips it, from this base dir or another.
    const report = await sweepLeftovers();
    assert.ok(report.skipped.includes(runId), JSON.stringify(report));
    const elsewhere = mkdtempSync('/tmp/drover-testbed-other-');
    try {
      const foreign = await sweepLeftovers({ baseDir: elsewhere });
      assert.ok(foreign.skipped.includes(runId), JSON.stringify(foreign));
      const scoped = await sweepLeftovers({ baseDir: elsewhere, onlyBaseDir: true });
      assert.ok(!scoped.skipped.includes(runId) && !scoped.swept.includes(runId));
    } finally {
      rmSync(elsewhere, { recursive: true, force: true });
    }
    assert.equal(
      leaks(runId).filter((l) => l.kind === 'process').length,
      left.filter((l) => l.kind === 'process').length,
    );
  } finally {
    const r = await removeRun(runId);
    assert.ok(r.killed.length >= 3, 'two tinis and a nats-server were killed');
  }
  assert.deepEqual(await settleLeftovers(runId), []);
});
