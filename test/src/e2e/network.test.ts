/**
 * Jobs that serve traffic move: each job has its own address on the job network, which moves
 * with it; live TCP connections survive migrations, drains and a cluster checkpoint restored
 * onto other hosts; the job's directory travels and its mounts are the destination's. Clients
 * run outside the cluster (the root namespace) and count what they see. docs/NETWORK.md.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Testbed } from '@drover/testbed';
import type { ClusterJob, OperationRecord } from '@drover/protocol';
import { ClusterFixture } from '../cluster/fixture.js';
import {
  datasetDigest,
  expectedDigest,
  httpHammer,
  loadDataset,
  PairServer,
  RedisConnection,
  redisWriter,
  WORKLOADS_DIR,
} from '../workloads/mod.js';
import { sleep, waitFor, waitForValue } from './helpers.js';

let f: ClusterFixture;
let tb: Testbed;

before(async () => {
  f = await ClusterFixture.start({ hosts: 3 });
  tb = f.tb;
});

after(async () => {
  await f?.stop();
});

const json = <T>(args: string[]): Promise<T> => f.json<T>(args);
const drover = (args: string[]): ReturnType<ClusterFixture['drover']> => f.drover(args);

/** `drover run --host H [--name N] -- CMD`, the job's record. */
function run(host: string, cmd: string[], name?: string): Promise<ClusterJob> {
  return json<ClusterJob>(['run', '--host', host, ...(name ? ['--name', name] : []), '--', ...cmd]);
}

/** Where a job runs now, as the controller says. */
async function hostOf(jobId: string): Promise<string> {
  return (await json<ClusterJob>(['inspect', jobId])).host;
}

function addressOf(j: ClusterJob): string {
  assert.equal(j.network.mode, 'job', `job ${j.id} has no address of its own`);
  return j.network.mode === 'job' ? j.network.address : '';
}

async function migrate(jobId: string, to: string, mode = 'stop-copy'): Promise<OperationRecord> {
  const op = await json<OperationRecord>(['migrate', jobId, '--to', to, '--mode', mode]);
  assert.equal(op.state, 'done', `migrate ${jobId} → ${to}: ${JSON.stringify(op.error)}`);
  return op;
}

/** The last `count=… local=… remote=… accepts=…` line a tcp-pair job printed. */
interface PairStatus {
  count: number;
  local: string;
  remote: string;
  accepts: number;
}
async function pairStatus(jobId: string): Promise<PairStatus> {
  const { data } = await json<{ data: string }>(['logs', jobId]);
  assert.ok(!/^FAIL/m.test(data), `job ${jobId} failed: ${data.slice(-500)}`);
  const lines = [...data.matchAll(/^count=(\d+) local=(\S+) remote=(\S+) accepts=(\d+)$/gm)];
  const m = lines.at(-1);
  if (!m) throw new Error(`no status from ${jobId} yet`);
  return { count: Number(m[1]), local: m[2]!, remote: m[3]!, accepts: Number(m[4]) };
}

/** Wait until the pair job counts past `beyond` on the same connection as `was`. */
async function pairAdvances(jobId: string, was: PairStatus): Promise<PairStatus> {
  return waitForValue(async () => {
    const now = await pairStatus(jobId);
    assert.equal(now.local, was.local, `${jobId} reconnected (local end changed)`);
    assert.equal(now.remote, was.remote, `${jobId} reconnected (remote end changed)`);
    assert.equal(now.accepts, was.accepts, `${jobId} accepted another connection`);
    return now.count > was.count + 20 ? now : undefined;
  }, 30_000);
}

describe('jobs that serve traffic move with their address and connections', () => {
  test('redis with 100k keys: a client on one held connection, a write every 5 ms, moved h1 → h2 → h3 → h1 (stop-copy and post-copy)', async (t) => {
    const KEYS = 100_000;
    const conf = join(tb.sharedDir, 'redis-net.conf');
    writeFileSync(
      conf,
      [
        'port 6379',
        'bind 0.0.0.0',
        'protected-mode no',
        'save ""',
        'appendonly no',
        'dir /tmp',
      ].join('\n') + '\n',
    );
    const job = await run('h1', ['/usr/bin/redis-server', conf], 'redis');
    const address = addressOf(job);
    const conn = await waitForValue(() => RedisConnection.open(address, 6379, 2000), 20_000);
    await loadDataset(conn, KEYS);
    assert.equal(await datasetDigest(conn, KEYS), expectedDigest(KEYS));
    const port = conn.localPort;
    const writer = redisWriter(conn, 5);
    const gaps: string[] = [];
    for (const [to, mode] of [
      ['h2', 'stop-copy'],
      ['h3', 'post-copy'],
      ['h1', 'stop-copy'],
    ] as const) {
      await sleep(500);
      const before = writer.report();
      const op = await migrate(job.id, to, mode);
      await waitFor(
        async () => writer.report().ok > before.ok + 50 || writer.report().failed > 0,
        30_000,
      );
      const r = writer.report();
      assert.equal(
        r.failed,
        0,
        `the client saw errors after the move to ${to}: ${r.errors.join('; ')}`,
      );
      assert.equal(await hostOf(job.id), to);
      gaps.push(`${to} (${mode}): frozen ${op.migration?.stats.frozenMs} ms`);
    }
    const report = await writer.stop();
    assert.equal(report.failed, 0, report.errors.join('; '));
    assert.equal(conn.localPort, port, 'the client never reconnected');
    // Every acknowledged write is there, and the dataset is whole.
    assert.equal(Number(await conn.call('GET', 'counter')), report.ok);
    assert.equal(await datasetDigest(conn, KEYS), expectedDigest(KEYS));
    t.diagnostic(
      `client: ${report.ok} writes, 0 errors, longest gap ${report.longestGapMs} ms; ${gaps.join('; ')}`,
    );
    conn.close();
    await json(['stop', job.id]);
  });

  test('an HTTP service hammered by 4 clients opening new connections migrates and drains', async (t) => {
    const job = await run('h1', [
      '/bin/sh',
      '-c',
      'echo hello-drover > "$DROVER_JOB_DIR/index.txt"; exec /usr/bin/python3 -m http.server 8080 --bind 0.0.0.0 --directory "$DROVER_JOB_DIR"',
    ]);
    const url = `http://${addressOf(job)}:8080/index.txt`;
    // Serving before the hammer starts: a refused connection then would be the test's fault.
    await waitFor(async () => (await fetch(url)).status === 200, 20_000);
    const hammer = httpHammer(url, 'hello-drover\n', 4);
    try {
      await waitFor(async () => hammer.report().ok > 50, 20_000);
      const before = hammer.report();
      assert.equal(before.failed, 0, `failures before any move: ${before.errors.join('; ')}`);
      await migrate(job.id, 'h2');
      await waitFor(async () => hammer.report().ok > before.ok + 100, 30_000);
      const drain = await json<OperationRecord>(['drain', 'h2']);
      assert.equal(drain.state, 'done', JSON.stringify(drain.items));
      assert.notEqual(await hostOf(job.id), 'h2');
      const mid = hammer.report();
      await waitFor(async () => hammer.report().ok > mid.ok + 100, 30_000);
      await json(['uncordon', 'h2']);
    } finally {
      const r = await hammer.stop();
      t.diagnostic(
        `HTTP: ${r.ok} requests answered, ${r.failed} failed, longest gap ${r.longestGapMs} ms${r.errors.length ? `: ${r.errors.join('; ')}` : ''}`,
      );
      assert.equal(r.failed, 0, `failed requests: ${r.errors.join('; ')}`);
    }
    await json(['stop', job.id]);
  });

  test('jobs on different hosts and an outside server keep one TCP connection through migrate, drain, and checkpoint + restore onto other hosts', async (t) => {
    const pair = join(WORKLOADS_DIR, 'tcp-pair.py');
    const outside = await PairServer.listen(tb.jobNetwork.gateway, 7100);
    try {
      const a = await run(
        'h1',
        ['/usr/bin/python3', pair, '--role', 'server', '--port', '7000'],
        'pair-a',
      );
      // B finds A by name: its /etc/hosts lists the cluster's named jobs.
      const b = await run(
        'h2',
        ['/usr/bin/python3', pair, '--role', 'client', '--connect', 'pair-a:7000'],
        'pair-b',
      );
      // C talks to a server outside the cluster (the root namespace).
      const c = await run('h3', [
        '/usr/bin/python3',
        pair,
        '--role',
        'client',
        '--connect',
        `${tb.jobNetwork.gateway}:7100`,
      ]);
      let sb = await waitForValue(() => pairStatus(b.id), 20_000);
      let sa = await waitForValue(() => pairStatus(a.id), 20_000);
      assert.equal(sb.remote, `${addressOf(a)}:7000`);
      await waitFor(async () => outside.count > 50, 20_000);
      const outsideSteps: string[] = [];
      const check = async (step: string): Promise<void> => {
        sb = await pairAdvances(b.id, sb);
        sa = await pairAdvances(a.id, sa);
        const seen = outside.count;
        await waitFor(async () => outside.count > seen + 20, 30_000);
        assert.equal(outside.failure, null, `the outside server: ${outside.failure}`);
        assert.equal(outside.accepts, 1);
        outsideSteps.push(step);
      };
      await migrate(a.id, 'h3');
      await check('A h1 → h3');
      await migrate(b.id, 'h1');
      await check('B h2 → h1');
      await migrate(c.id, 'h2');
      await check('C h3 → h2');
      const drain = await json<OperationRecord>(['drain', 'h3']);
      assert.equal(drain.state, 'done', JSON.stringify(drain.items));
      assert.notEqual(await hostOf(a.id), 'h3');
      await json(['uncordon', 'h3']);
      await check('drain h3');
      const cp = await json<OperationRecord>(['checkpoint', a.id, b.id, '--name', 'pair-cut']);
      assert.equal(cp.state, 'done', JSON.stringify(cp.error));
      const rs = await json<OperationRecord>(['restore', 'pair-cut', '--to', 'h3', '--to', 'h1']);
      assert.equal(rs.state, 'done', JSON.stringify(rs.error));
      await check('checkpoint A B, restore --to h3 --to h1');
      t.diagnostic(
        `A↔B counted to ${sb.count} on ${sb.local} ↔ ${sb.remote}; outside server: ${outside.count} on 1 connection, longest gap ${Math.round(outside.longestGapMs)} ms (${outsideSteps.join(', ')})`,
      );
      // B and C fail once their peer is gone: stopping them may find them ended already.
      for (const j of [a, b, c]) await drover(['stop', j.id]);
    } finally {
      await outside.close();
    }
  });

  test("a job moved twice: its logs and its own files have every line, and its mounts are the destination's", async () => {
    const job = await run('h1', [
      '/bin/sh',
      '-c',
      'i=0; while :; do i=$((i+1)); echo "tick $i"; echo "line $i" >> "$DROVER_JOB_DIR/data.txt"; sleep 0.05; done',
    ]);
    await sleep(500);
    await migrate(job.id, 'h2');
    await sleep(500);
    await migrate(job.id, 'h3');
    await sleep(1000);
    const logs = await json<{ data: string }>(['logs', job.id]);
    const ticks = [...logs.data.matchAll(/^tick (\d+)$/gm)].map((m) => Number(m[1]));
    assert.ok(ticks.length > 30, `too few ticks: ${ticks.length}`);
    assert.deepEqual(
      ticks,
      ticks.map((_, i) => i + 1),
      'the log has every tick, in order',
    );
    const inspected = await json<ClusterJob>(['inspect', job.id]);
    assert.equal(inspected.host, 'h3');
    const h3 = tb.host('h3');
    const data = readFileSync(join(h3.stateDir, 'drover', 'jobs', job.id, 'data.txt'), 'utf8');
    const lines = [...data.matchAll(/^line (\d+)$/gm)].map((m) => Number(m[1]));
    assert.ok(lines.length >= ticks.length - 2, `data.txt has ${lines.length} lines`);
    assert.deepEqual(
      lines,
      lines.map((_, i) => i + 1),
      "the job's own file has every line",
    );
    const mounts = await h3.exec(['cat', `/proc/${inspected.rootPid}/mountinfo`]);
    assert.equal(mounts.code, 0, mounts.stderr);
    const srv = mounts.stdout.split('\n').find((l) => l.split(' ')[4] === '/srv');
    assert.ok(srv, mounts.stdout);
    assert.equal(srv.split(' ')[3], h3.stateDir, "the job's /srv is h3's disk");
    for (const other of ['h1', 'h2']) {
      assert.ok(
        !mounts.stdout.includes(tb.host(other).stateDir),
        `${other}'s disk is still mounted`,
      );
    }
    await json(['stop', job.id]);
  });
});

describe('bad input is refused with a clear, typed error, and nothing starts or moves', () => {
  test('--net with a bad value', async () => {
    const r = await drover(['run', '--net', 'bridge', '--', '/bin/true']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /net/);
  });

  test('a host without the job bridge refuses jobs with an address; moves to it are refused', async () => {
    const h3 = tb.host('h3');
    const jobsBefore = (await json<{ jobs: ClusterJob[] }>(['jobs'])).jobs.length;
    const mover = await run('h1', ['/bin/sleep', '1000']);
    assert.equal((await h3.exec(['ip', 'link', 'set', 'drover0', 'name', 'drover9'])).code, 0);
    try {
      const r = await drover(['run', '--host', 'h3', '--', '/bin/sleep', '1000']);
      assert.equal(r.code, 4, r.stderr);
      assert.match(r.stderr, /no job bridge drover0/);
      const m = await drover(['migrate', mover.id, '--to', 'h3']);
      assert.notEqual(m.code, 0);
      assert.match(m.stderr + m.stdout, /no job bridge drover0/);
      assert.equal(await hostOf(mover.id), 'h1');
    } finally {
      await h3.exec(['ip', 'link', 'set', 'drover9', 'name', 'drover0']);
    }
    await json(['stop', mover.id]);
    const after = (await json<{ jobs: ClusterJob[] }>(['jobs'])).jobs;
    assert.equal(after.filter((j) => j.host === 'h3' && j.state === 'running').length, 0);
    assert.ok(after.length <= jobsBefore + 1);
  });

  test('an address asked for that something on the segment already answers for is refused', async () => {
    const seg = tb.jobNetwork.segment;
    const prefix = tb.jobNetwork.gateway.replace(/\.1$/, '');
    const taken = `${prefix}.250`;
    execFileSync('ip', ['addr', 'add', `${taken}/24`, 'dev', seg]);
    try {
      const r = await drover(['run', '--host', 'h2', '--ip', taken, '--', '/bin/sleep', '1000']);
      assert.equal(r.code, 4, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(`${taken.replaceAll('.', '\\.')} is already in use on the job segment`),
      );
      const jobs = (await json<{ jobs: ClusterJob[] }>(['jobs'])).jobs;
      assert.ok(
        !jobs.some(
          (j) => j.network.mode === 'job' && j.network.address === taken && j.state === 'running',
        ),
      );
    } finally {
      execFileSync('ip', ['addr', 'del', `${taken}/24`, 'dev', seg]);
    }
  });

  test('a picked address something else answers for is skipped; an exhausted pool refuses the next job, nothing starts', async () => {
    const seg = tb.jobNetwork.segment;
    const prefix = tb.jobNetwork.gateway.replace(/\.1$/, '');
    await f.restartController({ extraArgs: ['--job-range', `${prefix}.240-${prefix}.242`] });
    execFileSync('ip', ['addr', 'add', `${prefix}.241/24`, 'dev', seg]);
    const started: ClusterJob[] = [];
    try {
      for (let i = 0; i < 2; i++) started.push(await run('h1', ['/bin/sleep', '1000']));
      assert.deepEqual(started.map(addressOf).sort(), [`${prefix}.240`, `${prefix}.242`]);
      const r = await drover(['run', '--host', 'h1', '--', '/bin/sleep', '1000']);
      assert.equal(r.code, 4, r.stderr);
      assert.match(r.stderr, /has no free address/);
      const running = (await json<{ jobs: ClusterJob[] }>(['jobs', '--host', 'h1'])).jobs.filter(
        (j) => j.state === 'running',
      );
      assert.deepEqual(running.map((j) => j.id).sort(), started.map((j) => j.id).sort());
    } finally {
      execFileSync('ip', ['addr', 'del', `${prefix}.241/24`, 'dev', seg]);
      for (const j of started) await drover(['stop', j.id]);
      await f.restartController();
    }
  });
});
