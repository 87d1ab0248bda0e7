/**
 * The operator's view end to end (issue 18), through the real `drover` binary against real agents
 * in emulated hosts, a real controller, CRIU and NATS: the CLI as kubectl and docker users expect
 * it, failures shown in full, one exit code per kind of refusal, metrics scraped over HTTP, and
 * what is inside a checkpoint.
 *
 * Over 500 lines on purpose: one suite on one testbed (bringing a testbed up costs a minute on
 * these machines); each test is one thing an operator does.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { ClusterJob, ImageContents, OperationRecord } from '@drover/protocol';
import { CLI_MAIN, REPO_ROOT } from '../cluster/cli.js';
import { ClusterFixture } from '../cluster/fixture.js';
import { waitReady, workloadCommand } from '../workloads/mod.js';
import { JOB_ENV, sleep, waitFor, waitForValue } from './helpers.js';
import { metricValue, scrape } from './metrics-scrape.js';

let f: ClusterFixture;
const children: ChildProcess[] = [];

before(async () => {
  f = await ClusterFixture.start({ hosts: 3 });
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await f?.stop();
});

const json = <T>(args: string[]): Promise<T> => f.json<T>(args);
const drover = (args: readonly string[]): ReturnType<ClusterFixture['drover']> => f.drover(args);

/** `drover ARGS` left running (a follower), its output collected. */
function follow(args: string[]): { child: ChildProcess; out: () => string; done: Promise<number> } {
  const child = spawn(process.execPath, [CLI_MAIN, '--nats', f.urls.join(','), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_TEST_CONTEXT: undefined },
  });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<number>((r) => child.once('exit', (code) => r(code ?? -1)));
  return { child, out: () => out, done };
}

const envFlags = Object.entries(JOB_ENV).flatMap(([k, v]) => ['--env', `${k}=${v}`]);

/** A shell job on `host` that prints a numbered line every 0.2 s and traps some signals. */
async function chatty(host: string, name: string): Promise<ClusterJob> {
  const script =
    'trap "echo got USR1" USR1; trap "echo got 12" 12; trap "echo got RTMIN+2" 36; ' +
    'i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.2; done';
  return json<ClusterJob>(['run', '--host', host, '--name', name, '--', '/bin/sh', '-c', script]);
}

async function logsOf(ref: string): Promise<string> {
  const r = await drover(['logs', ref]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

describe('the CLI as kubectl and docker users expect', () => {
  test('run waits for exec: a program that does not exist fails with why (exit 1); empty arguments are arguments', async () => {
    const missing = await drover(['run', '--host', 'h1', '--', '/nonexistent/binary', '-x']);
    assert.equal(missing.code, 1, missing.stderr + missing.stdout);
    assert.match(
      missing.stderr,
      /^drover: \/nonexistent\/binary: \/nonexistent\/binary: not found$/m,
    );
    assert.equal(missing.stdout, '');
    // It left an ended job, with the shell's exit code, that jobs --all shows.
    const all = await json<{ jobs: ClusterJob[] }>(['jobs', '--all']);
    const failed = all.jobs.find((j) => j.command[0] === '/nonexistent/binary');
    assert.equal(failed?.state, 'exited');
    assert.equal(failed?.exitCode, 127);
    // An empty argument is passed as one (redis-server --save "" style).
    const job = await json<ClusterJob>([
      'run',
      '--host',
      'h1',
      '--name',
      'empty-args',
      '--',
      '/bin/sh',
      '-c',
      'printf "[%s]" "$@"; echo; sleep 600',
      'sh',
      'a',
      '',
      'b',
    ]);
    assert.deepEqual(job.command.slice(-3), ['a', '', 'b']);
    await waitFor(async () => (await logsOf('empty-args')).includes('[a][][b]'));
    assert.equal((await drover(['stop', 'empty-args'])).code, 0);
  });

  test('friendly messages for bad flags (never a regular expression); --version from the package', async () => {
    const cases: [string[], RegExp][] = [
      [
        ['run', '--cwd', 'relative/dir', '--', 'true'],
        /^drover: --cwd must be an absolute path .*\(got "relative\/dir"\)$/m,
      ],
      [['run', '--env', '1X=y', '--', 'true'], /^drover: --env must be a variable name/m],
      [['run', '--host', 'a b', '--', 'true'], /^drover: --host must be an id/m],
      [['run', '--'], /give the command to run/],
      [['signal', 'x', 'NOPE'], /unknown signal "NOPE"; give a signal name/],
      [['logs', 'x', '--since', 'soon'], /--since wants a duration/],
      [['events', '--limit', '0'], /--limit must be between 1 and 10000/],
    ];
    for (const [args, message] of cases) {
      const r = await drover(args);
      assert.equal(r.code, 2, `drover ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, `drover ${args.join(' ')}`);
      assert.doesNotMatch(r.stderr, /\/\^|\$\/|\(\?!/, `a pattern in: ${r.stderr}`);
    }
    const v = await drover(['--version']);
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'controller', 'package.json'), 'utf8'));
    assert.equal(v.code, 0);
    assert.equal(v.stdout.trim(), pkg.version);
    assert.notEqual(v.stdout.trim(), 'unknown');
  });

  test('signals by name with or without SIG, any case, by number, real-time; names wherever an id goes', async () => {
    const job = await chatty('h2', 'sig-test');
    await waitFor(async () => (await logsOf('sig-test')).includes('line 2'));
    for (const [sig, line] of [
      ['USR1', 'got USR1'],
      ['usr2', 'got 12'],
      ['SIGRTMIN+2', 'got RTMIN+2'],
      ['36', 'got RTMIN+2'],
      ['10', 'got USR1'],
    ] as const) {
      const before = (await logsOf('sig-test')).split(line).length;
      const r = await drover(['signal', 'sig-test', sig]);
      assert.equal(r.code, 0, `${sig}: ${r.stderr}`);
      await waitFor(async () => (await logsOf(job.id)).split(line).length > before, 10_000);
    }
    const inspected = await json<ClusterJob & { processes: unknown[] }>(['inspect', 'sig-test']);
    assert.equal(inspected.id, job.id);
    assert.ok(inspected.processes.length >= 2);
    assert.equal((await drover(['stop', 'sig-test'])).code, 0);
    // An ended job is inspected where it ended, with how it ended.
    await waitFor(async () => (await json<ClusterJob>(['inspect', 'sig-test'])).state === 'exited');
    const ended = await drover(['inspect', 'sig-test']);
    assert.equal(ended.code, 0, ended.stderr);
    assert.match(ended.stdout, new RegExp(`^${job.id} \\(sig-test\\) on h2: exited`, 'm'));
    assert.match(ended.stdout, /ended .*: (killed by SIGTERM|exit code 143)/);
    // Refused by its state, like its agent refuses it.
    const late = await drover(['signal', 'sig-test', 'USR1']);
    assert.equal(late.code, 4, late.stderr);
    assert.match(late.stderr, /is not running \(it is exited on h2\)/);
  });

  test('logs: --tail lines, --since a time, -f until the job ends (and on across a migration)', async () => {
    const job = await chatty('h1', 'talker');
    await waitFor(async () => (await logsOf('talker')).includes('line 10'));
    const tail = await drover(['logs', 'talker', '--tail', '3']);
    assert.equal(tail.code, 0, tail.stderr);
    const lines = tail.stdout.trim().split('\n');
    assert.equal(lines.length, 3);
    const n = Number(lines[2]!.split(' ')[1]);
    assert.deepEqual(lines, [`line ${n - 2}`, `line ${n - 1}`, `line ${n}`]);
    // Since 3 s ago: none of the first lines (written more than 3 s ago), the newest ones.
    await sleep(3500);
    const since = await drover(['logs', 'talker', '--since', '2s']);
    assert.equal(since.code, 0, since.stderr);
    assert.doesNotMatch(since.stdout, /^line 1$/m);
    const sinceLines = since.stdout.trim().split('\n');
    assert.ok(sinceLines.length >= 5 && sinceLines.length <= 25, since.stdout);
    // Following: lines appear as they are written, each once, in order.
    const f = follow(['logs', 'talker', '-f', '--tail', '1']);
    await waitFor(async () => f.out().split('\n').length > 8, 20_000);
    const migrated = await drover(['migrate', 'talker', '--to', 'h2']);
    assert.equal(migrated.code, 0, migrated.stderr);
    // The log travels with the job: the follow goes on with what it writes on h2.
    const atMove = f.out().split('\n').length;
    await waitFor(async () => f.out().split('\n').length > atMove + 5, 20_000);
    assert.equal((await drover(['stop', 'talker'])).code, 0);
    const code = await Promise.race([f.done, sleep(20_000).then(() => 'still running')]);
    assert.equal(code, 0, `logs -f did not end with the job: ${f.out()}`);
    const got = f
      .out()
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('line '))
      .map((l) => Number(l.split(' ')[1]));
    assert.ok(got.length > 8, f.out());
    for (let i = 1; i < got.length; i++) assert.equal(got[i], got[i - 1]! + 1, f.out());
    assert.equal(job.id.length > 0, true);
  });

  test('jobs: each job once where it lives now with its host PID; --all shows hops and exit codes; rm and prune', async () => {
    const job = await json<ClusterJob>([
      'run',
      '--host',
      'h1',
      '--name',
      'hopper',
      '--',
      'sleep',
      '600',
    ]);
    for (const to of ['h2', 'h3'])
      assert.equal((await drover(['migrate', 'hopper', '--to', to])).code, 0);
    const now = await json<{ jobs: ClusterJob[] }>(['jobs']);
    const mine = now.jobs.filter((j) => j.id === job.id);
    assert.deepEqual(
      mine.map((j) => [j.host, j.state]),
      [['h3', 'running']],
    );
    assert.ok(
      now.jobs.every((j) =>
        ['running', 'frozen', 'checkpointing', 'migrating', 'starting'].includes(j.state),
      ),
    );
    // The PID column is the host's PID of the command: the one inspect reports.
    const inspected = await json<ClusterJob>(['inspect', 'hopper']);
    const table = await drover(['jobs']);
    const row = table.stdout.split('\n').find((l) => l.startsWith(job.id))!;
    assert.match(
      row,
      new RegExp(`^${job.id} +hopper +h3 +running +${inspected.mainPid} +- +sleep 600$`),
    );
    assert.notEqual(inspected.mainPid, inspected.mainPidInside);
    const all = await json<{ jobs: ClusterJob[] }>(['jobs', '--all']);
    assert.deepEqual(
      all.jobs
        .filter((j) => j.id === job.id)
        .map((j) => j.state)
        .sort(),
      ['migrated', 'migrated', 'running'],
    );
    // rm: refused for a live job (nothing removed), then it removes every hop of an ended one.
    const refused = await drover(['jobs', 'rm', 'hopper']);
    assert.equal(refused.code, 4, refused.stderr);
    assert.match(refused.stderr, /hopper|is running on h3; stop it first/);
    assert.equal((await drover(['signal', 'hopper', 'KILL'])).code, 0);
    await waitFor(async () =>
      (await json<{ jobs: ClusterJob[] }>(['jobs', '--all'])).jobs.some(
        (j) => j.id === job.id && j.state === 'exited',
      ),
    );
    const ended = await drover(['jobs', '--all']);
    assert.match(ended.stdout, new RegExp(`^${job.id} +hopper +h3 +exited +- +SIGKILL `, 'm'));
    const removed = await json<{ removed: { jobId: string; host: string }[] }>([
      'jobs',
      'rm',
      'hopper',
    ]);
    assert.deepEqual(removed.removed.map((r) => r.host).sort(), ['h1', 'h2', 'h3']);
    assert.equal(
      (await json<{ jobs: ClusterJob[] }>(['jobs', '--all'])).jobs.filter((j) => j.id === job.id)
        .length,
      0,
    );
    // prune: every ended job goes; live ones stay.
    const live = await json<ClusterJob>(['run', '--host', 'h1', '--', 'sleep', '600']);
    const pruned = await json<{ removed: { jobId: string }[] }>(['jobs', 'prune']);
    assert.ok(pruned.removed.length >= 1);
    const after = await json<{ jobs: ClusterJob[] }>(['jobs', '--all']);
    assert.ok(
      after.jobs.every((j) => ['running', 'starting'].includes(j.state)),
      JSON.stringify(after.jobs),
    );
    assert.ok(after.jobs.some((j) => j.id === live.id));
    assert.equal((await drover(['signal', live.id, 'KILL'])).code, 0);
  });

  test('events: newest last counting back from now, progress ticks folded, -f follows', async () => {
    const dir = join(f.tb.runDir, 'shared', 'events-memory');
    mkdirSync(dir, { recursive: true });
    // A slow link into h2 (~8 MB/s): a 64 MiB job's pages take seconds to reach it, and the
    // move sends a progress tick of its dump every 2 s meanwhile.
    await f.tb.host('h2').limitIncoming(8_000_000);
    try {
      const job = await json<ClusterJob>([
        'run',
        '--host',
        'h1',
        '--name',
        'ticker',
        ...envFlags,
        '--',
        ...workloadCommand('memory', { dir, mb: 64 }),
      ]);
      await waitReady(dir, 30_000);
      const op = await json<OperationRecord>(['migrate', 'ticker', '--to', 'h2']);
      assert.equal(op.state, 'done');
      const mig = op.migration!.migrationId;
      const raw = await json<{
        events: { seq: number; value: { migrationId?: string; phase?: string } }[];
      }>(['events', '--raw', '--limit', '2000']);
      const ticks = raw.events.filter(
        (e) => e.value.migrationId === mig && e.value.phase === 'dumping',
      );
      assert.ok(ticks.length >= 3, `only ${ticks.length} ticks`);
      // Folded, the run of ticks is one line saying how many it stands for.
      const folded = await drover(['events', '--limit', '30']);
      assert.equal(folded.code, 0, folded.stderr);
      const tickLines = folded.stdout
        .split('\n')
        .filter((l) => l.includes(mig) && / dumping /.test(l));
      assert.equal(tickLines.length, 1, folded.stdout);
      assert.match(tickLines[0]!, new RegExp(`\\(${ticks.length} progress updates\\)`));
      // Newest last: the last line is the newest event; --limit counts back from now.
      const three = await json<{ events: { seq: number }[] }>(['events', '--limit', '3']);
      assert.equal(three.events.length, 3);
      const newest = Math.max(...raw.events.map((e) => e.seq));
      assert.ok(three.events[2]!.seq >= newest, JSON.stringify(three));
      assert.ok(
        three.events[0]!.seq < three.events[1]!.seq && three.events[1]!.seq < three.events[2]!.seq,
      );
      // -f: new events appear as they happen.
      const f = follow(['events', '-f', '--limit', '1']);
      await waitFor(async () => /SEQ +TIME/.test(f.out()), 15_000);
      assert.equal((await drover(['signal', job.id, 'KILL'])).code, 0);
      await waitFor(async () => new RegExp(`job +${job.id} exited`).test(f.out()), 20_000);
      f.child.kill('SIGINT');
      await f.done;
    } finally {
      await f.tb.host('h2').limitIncoming(null);
    }
  });
});

describe('errors you can see, one exit code per refusal', () => {
  test('a migration that fails in CRIU: exit 1, its record with phases and CRIU lines (also --json), status shows why', async () => {
    // A file lock: CRIU refuses to dump it without --file-locks (preflight does not look),
    // which jobs have by default (docs/JOBS.md): this one turns it off.
    const job = await json<ClusterJob>([
      'run',
      '--host',
      'h1',
      '--name',
      'locker',
      '--checkpoint-opt',
      'no-file-locks',
      '--',
      '/usr/bin/python3',
      '-c',
      // In the job's own directory, which travels with it (no file check on a destination).
      'import fcntl,os,time\nf=open(os.environ["DROVER_JOB_DIR"] + "/lock","w")\nfcntl.flock(f, fcntl.LOCK_EX)\ntime.sleep(600)',
    ]);
    await sleep(500);
    const before = {
      ctl: await scrape(f.controller.metricsUrl!),
      h1: await scrape(f.agent('h1').metricsUrl),
    };
    const human = await drover(['migrate', 'locker', '--to', 'h2']);
    assert.equal(human.code, 1, human.stderr + human.stdout);
    assert.match(human.stdout, /did not move: .*file locks.*; it runs where it was/);
    assert.match(human.stdout, /^dumping +\d+ ms/m);
    assert.match(human.stdout, /^error: CRIU: /m);
    assert.match(human.stdout, /^CRIU's log \(.*dump\.log\):$/m);
    assert.match(human.stdout, /Error \(criu\/file-lock\.c:\d+\): Some file locks are hold/);
    const r = await drover(['--json', 'migrate', 'locker', '--to', 'h2']);
    assert.equal(r.code, 1, r.stderr);
    const op = JSON.parse(r.stdout) as OperationRecord;
    assert.equal(op.state, 'failed');
    assert.notEqual(op.migration, null, 'the failed migration record came back');
    assert.equal(op.migration!.state, 'rolled-back');
    assert.ok(op.migration!.timeline.some((t) => t.phase === 'dumping'));
    assert.ok(
      JSON.stringify(op.migration!.error).includes('file-lock.c'),
      JSON.stringify(op.migration!.error),
    );
    assert.equal(op.error?.code, 'CRIU');
    assert.ok(Array.isArray(op.error?.details?.['logTail']));
    // Stored on the operation: `drover status OP` prints it in full.
    const status = await drover(['status', op.opId]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^error: CRIU: /m);
    assert.match(status.stdout, /Error \(criu\/file-lock\.c:\d+\)/);
    // It still runs where it was, and the failures were counted where they happened.
    assert.deepEqual(
      (await json<{ jobs: ClusterJob[] }>(['jobs'])).jobs
        .filter((j) => j.id === job.id)
        .map((j) => j.host),
      ['h1'],
    );
    const after = {
      ctl: await scrape(f.controller.metricsUrl!),
      h1: await scrape(f.agent('h1').metricsUrl),
    };
    const delta = (t: 'ctl' | 'h1', name: string, labels: Record<string, string>) =>
      metricValue(after[t], name, labels) - metricValue(before[t], name, labels);
    assert.equal(
      delta('h1', 'drover_criu_failures_total', { request: 'dump', reason: 'file-lock' }),
      2,
    );
    assert.equal(
      delta('ctl', 'drover_migrations_total', { mode: 'stop-copy', outcome: 'failed' }),
      2,
    );
    assert.equal((await drover(['signal', 'locker', 'KILL'])).code, 0);
  });

  test('the same refusal (EXTERNAL_TCP) exits 4 from preflight, migrate and drain', async () => {
    // A peer outside the job: a listener of this test runner on the testbed's bridge.
    const held: Socket[] = [];
    const server: Server = createServer((s) => held.push(s));
    await new Promise<void>((r) => server.listen(0, f.tb.bridgeAddress, r));
    const port = (server.address() as { port: number }).port;
    try {
      const job = await json<ClusterJob>([
        'run',
        '--host',
        'h3',
        '--name',
        'caller',
        // On the host's network: its TCP connections cannot follow it (a job's own network can).
        '--net',
        'host',
        '--',
        '/usr/bin/python3',
        '-c',
        `import socket,time\nc=socket.create_connection(("${f.tb.bridgeAddress}", ${port}))\ntime.sleep(600)`,
      ]);
      await waitFor(async () => held.length > 0, 10_000);
      const pre = await drover(['preflight', 'caller', '--to', 'h2']);
      assert.equal(pre.code, 4, pre.stderr + pre.stdout);
      assert.match(pre.stdout, /EXTERNAL_TCP/);
      const mig = await drover(['migrate', 'caller', '--to', 'h2']);
      assert.equal(mig.code, 4, mig.stderr + mig.stdout);
      assert.match(mig.stdout, /cannot move to h2/);
      const drain = await drover(['drain', 'h3']);
      assert.equal(drain.code, 4, drain.stderr + drain.stdout);
      assert.match(drain.stdout, new RegExp(`${job.id} +caller +skipped`));
      assert.equal((await drover(['uncordon', 'h3'])).code, 0);
      assert.equal((await drover(['signal', 'caller', 'KILL'])).code, 0);
    } finally {
      for (const s of held) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

describe('metrics', () => {
  test('scraped over HTTP after a migration: the counts, the phase histograms, bytes, hosts, jobs by state, event-loop lag', async () => {
    assert.ok(f.controller.metricsUrl, 'the controller serves metrics');
    const job = await json<ClusterJob>([
      'run',
      '--host',
      'h1',
      '--name',
      'metered',
      '--',
      'sleep',
      '600',
    ]);
    const before = await scrape(f.controller.metricsUrl!);
    const op = await json<OperationRecord>(['migrate', 'metered', '--to', 'h2']);
    assert.equal(op.state, 'done');
    const mode = op.migration!.mode;
    const after = await scrape(f.controller.metricsUrl!);
    const d = (name: string, labels: Record<string, string> = {}) =>
      metricValue(after, name, labels) - metricValue(before, name, labels);
    assert.equal(d('drover_migrations_total', { mode, outcome: 'done' }), 1);
    for (const h of ['downtime', 'dump', 'transfer', 'restore', 'duration'])
      assert.equal(d(`drover_migration_${h}_seconds_count`, { mode }), 1, h);
    assert.ok(
      Math.abs(
        d('drover_migration_downtime_seconds_sum', { mode }) - op.migration!.stats.frozenMs / 1000,
      ) < 0.0015,
    );
    assert.equal(d('drover_migration_bytes_total', { mode }), op.migration!.stats.bytes);
    assert.equal(d('drover_operations_total', { kind: 'migrate', outcome: 'done' }), 1);
    for (const h of ['h1', 'h2', 'h3']) {
      assert.equal(metricValue(after, 'drover_host_up', { host: h }), 1, h);
      assert.ok(metricValue(after, 'drover_host_heartbeat_age_seconds', { host: h }) < 10, h);
    }
    assert.match(after, /^nodejs_eventloop_lag_seconds \d/m);
    assert.match(after, /^drover_nats_reconnects_total 0$/m);
    // The agents: jobs by state on their disk, checkpoints, CRIU, their own event loop.
    const h2 = await scrape(f.agent('h2').metricsUrl);
    assert.ok(metricValue(h2, 'drover_agent_jobs', { state: 'running' }) >= 1);
    assert.match(h2, /^drover_agent_info\{host="h2",criu="[\d.]+"\} 1$/m);
    assert.match(h2, /^nodejs_eventloop_lag_seconds \d/m);
    // Jobs by host and state from the heartbeats: the job is counted on h2 now.
    await waitFor(async () => {
      const t = await scrape(f.controller.metricsUrl!);
      return metricValue(t, 'drover_jobs', { host: 'h2', state: 'running' }) >= 1;
    });
    assert.equal((await drover(['signal', job.id, 'KILL'])).code, 0);
  });
});

describe('what is inside an image set', () => {
  test('images inspect NAME --job J decodes the process tree, argv, files, sockets and memory from the sealed set', async () => {
    const dir = join(f.tb.runDir, 'shared', 'decode');
    mkdirSync(dir, { recursive: true });
    const script =
      'import socket,sys,time,os\n' +
      's=socket.socket(); s.bind(("127.0.0.1",0)); s.listen()\n' +
      `f=open("${dir}/data.txt","w"); f.write("x"*100); f.flush()\n` +
      `open("${dir}/port","w").write(str(s.getsockname()[1]))\n` +
      'b=bytearray(4*1024*1024)\n' +
      'for i in range(0,len(b),4096): b[i]=1\n' +
      'time.sleep(600)';
    const job = await json<ClusterJob>([
      'run',
      '--host',
      'h1',
      '--name',
      'decodee',
      '--',
      '/usr/bin/python3',
      '-c',
      script,
      'first',
      '',
      'third',
    ]);
    const port = await waitForValue(async () => {
      const text = readFileSync(join(dir, 'port'), 'utf8');
      return text ? Number(text) : undefined;
    }, 20_000);
    const cp = await json<OperationRecord>([
      'checkpoint',
      'decodee',
      '--name',
      'dec1',
      '--leave-running',
    ]);
    assert.equal(cp.state, 'done');
    const c = await json<ImageContents & { jobId: string; set: string }>([
      'images',
      'inspect',
      'dec1',
      '--job',
      'decodee',
    ]);
    assert.equal(c.jobId, job.id);
    const py = c.processes.find((p) => p.cmdline?.[0] === '/usr/bin/python3');
    assert.ok(py, JSON.stringify(c.processes.map((p) => [p.pid, p.comm, p.cmdline])));
    assert.deepEqual(py.cmdline!.slice(-3), ['first', '', 'third']);
    // The tree: tini is PID 1 inside the job, the wrapper shell under it, python under that.
    const tini = c.processes.find((p) => p.pid === 1)!;
    assert.equal(tini.comm, 'tini');
    assert.ok(c.processes.some((p) => p.ppid === 1));
    assert.ok(
      py.files.some((f) => f.type === 'INETSK' && f.description === `tcp 127.0.0.1:${port} LISTEN`),
    );
    assert.ok(py.files.some((f) => f.type === 'REG' && f.path === `${dir}/data.txt`));
    assert.ok(py.memory.mappedBytes > 4 * 1024 * 1024);
    assert.ok(py.memory.dumpedBytes >= 4 * 1024 * 1024);
    assert.ok(py.memory.mappings.some((m) => m.what === '[heap]' || m.what === '[anon]'));
    assert.ok(py.memory.mappings.some((m) => m.what.includes('python3')));
    const human = await drover(['images', 'inspect', 'dec1', '--job', job.id]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^PID +PPID +PGID +SID +THREADS +MEMORY +COMMAND$/m);
    assert.match(human.stdout, /\/usr\/bin\/python3 -c .* first "" third/);
    assert.match(human.stdout, new RegExp(`tcp 127\\.0\\.0\\.1:${port} LISTEN`));
    assert.match(human.stdout, /^START +END +SIZE +IN IMAGE +PERMS +MAPPING$/m);
    const none = await drover(['images', 'inspect', 'dec1', '--job', 'nobody']);
    assert.equal(none.code, 3, none.stderr);
    assert.match(none.stderr, /image set dec1 has no job nobody/);
    assert.equal((await drover(['signal', 'decodee', 'KILL'])).code, 0);
    assert.equal((await drover(['images', 'rm', 'dec1'])).code, 0);
  });
});
