/**
 * The controller and the `drover` CLI end to end: real agents in emulated hosts, a real
 * controller, the CLI run as operators run it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ControllerProcess } from '@drover/testbed';
import { ClusterFixture } from '../cluster/fixture.js';
import { requestVerdict, waitReady, workloadCommand } from '../workloads/mod.js';
import { cliJobs } from './cli-jobs.js';
import { JOB_ENV, signaller, waitFor, waitForValue } from './helpers.js';

let f: ClusterFixture;

before(async () => {
  f = await ClusterFixture.start({ hosts: 3 });
});

after(async () => {
  await f?.stop();
});

const { json, launch } = cliJobs(() => f);
const drover = (args: readonly string[]): ReturnType<ClusterFixture['drover']> => f.drover(args);

describe('drover CLI through the controller', () => {
  test('drover run + drover migrate move a workload between hosts; it verifies itself', async () => {
    const dir = join(f.runDir, 'shared', 'cli-node');
    mkdirSync(dir, { recursive: true });
    const env = Object.entries(JOB_ENV).flatMap(([k, v]) => ['--env', `${k}=${v}`]);
    const job = await json<{ id: string; host: string }>([
      'run',
      '--host',
      'h1',
      '--name',
      'cli-node',
      ...env,
      '--',
      ...workloadCommand('node', { dir }),
    ]);
    assert.equal(job.host, 'h1');
    await waitReady(dir, 20_000);
    const human = await drover(['migrate', job.id, '--to', 'h2']);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /moved h1 → h2/);
    assert.match(human.stdout, /frozen \(downtime\) \d+ ms/);
    assert.equal((await requestVerdict(dir, signaller(f.agent('h2'), job.id), 20_000)).ok, true);
    // Without --to, placement picks (and explains) a host other than the current one.
    const op = await json<{ state: string; placement: string; migration: { destination: string } }>(
      ['migrate', job.id],
    );
    assert.equal(op.state, 'done');
    assert.notEqual(op.migration.destination, 'h2');
    assert.match(op.placement, new RegExp(op.migration.destination));
    const jobs = await json<{ jobs: { id: string; host: string; state: string }[] }>(['jobs']);
    const live = jobs.jobs.filter((j) => j.id === job.id && j.state === 'running');
    assert.deepEqual(
      live.map((j) => j.host),
      [op.migration.destination],
    );
    assert.equal(
      (await requestVerdict(dir, signaller(f.agent(op.migration.destination), job.id), 20_000)).ok,
      true,
    );
    // The history kept the agents' events of this job: its migration phases and job states.
    const ev = await json<{
      events: { subject: string; value: { jobId?: string; phase?: string; state?: string } }[];
    }>(['events', '--limit', '1000']);
    const mine = ev.events.filter((e) => e.value.jobId === job.id);
    assert.ok(
      mine.some((e) => e.subject === 'drover.evt.h1.migration' && e.value.phase === 'done'),
      'no migration event',
    );
    assert.ok(
      mine.some((e) => e.subject === 'drover.evt.h2.job' && e.value.state === 'running'),
      'no job event',
    );
    const ops = await json<{ ops: { opId: string; state: string }[] }>(['ops']);
    assert.ok(ops.ops.filter((o) => o.state === 'done').length >= 2);
    assert.equal((await drover(['signal', job.id, 'SIGKILL'])).code, 0);
  });

  test('drover migrate shows transfer progress with rate and ETA on stderr, then the timeline', async () => {
    // h2 takes ~15 MiB/s: the 64 MiB job's pages, which go to h2's page server while CRIU
    // dumps, take a few seconds.
    await f.tb.host('h2').limitIncoming(16_000_000);
    try {
      const dir = join(f.runDir, 'shared', 'cli-progress');
      mkdirSync(dir, { recursive: true });
      const env = Object.entries(JOB_ENV).flatMap(([k, v]) => ['--env', `${k}=${v}`]);
      const job = await json<{ id: string }>([
        'run',
        '--host',
        'h1',
        ...env,
        '--',
        ...workloadCommand('memory', { dir, mb: 64 }),
      ]);
      await waitReady(dir, 30_000);
      // stderr is a pipe here, not a terminal: plain lines, one a second while bytes flow.
      const r = await drover(['migrate', job.id, '--to', 'h2']);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stderr.split('\n');
      assert.ok(lines.includes(`${job.id}: freezing and dumping (to h2)`), r.stderr);
      const dumping = lines.filter((l) => l.startsWith(`${job.id}: dumping: sent `));
      assert.ok(dumping.length >= 2, `too few progress lines:\n${r.stderr}`);
      for (const l of dumping.slice(1)) {
        assert.match(
          l,
          /dumping: sent [\d.]+ MiB of [\d.]+ MiB \(\d+%\), [\d.]+ MiB\/s(, ETA (<1s|\d+s))?$/,
        );
      }
      const dumped = lines.find((l) => l.startsWith(`${job.id}: dumped in `)) ?? '';
      const m =
        /^job-\S+: dumped in \d+ ms; ([\d.]+) MiB of pages sent; [\d.]+ (KiB|MiB) to send$/.exec(
          dumped,
        );
      assert.ok(m, r.stderr);
      assert.ok(Number(m[1]) >= 64, r.stderr);
      const sent = lines.filter((l) => l.startsWith(`${job.id}: sent `));
      assert.match(sent.at(-1) ?? '', /\(100%\)(, [\d.]+ (KiB|MiB)\/s)?; h2 restores$/, r.stderr);
      assert.match(r.stderr, new RegExp(`${job.id}: moved to h2; frozen \\d+ ms`));
      // The timeline: every phase with its duration, the transfer's size and rate.
      assert.match(r.stdout, /moved h1 → h2/);
      assert.match(
        r.stdout,
        /^dumping +\d+ ms +\d+ ms +CRIU dumps; its \d+ pages go to h2's page server$/m,
      );
      assert.match(
        r.stdout,
        /^transferring +\d+ ms +\d+ ms +[\d.]+ (KiB|MiB) in \d+ files at [\d.]+ (KiB|MiB)\/s$/m,
      );
      assert.match(r.stdout, /^awaiting +\d+ ms +\d+ ms +h2 restores the job$/m);
      assert.match(r.stdout, /frozen \(downtime\) \d+ ms .* \d+ pages · stop-copy$/m);
      assert.equal((await requestVerdict(dir, signaller(f.agent('h2'), job.id), 20_000)).ok, true);
      // --json prints the record only: no progress on stderr.
      const quiet = await drover(['--json', 'migrate', job.id, '--to', 'h3']);
      assert.equal(quiet.code, 0, quiet.stderr);
      assert.equal(quiet.stderr, '');
      assert.equal((JSON.parse(quiet.stdout) as { state: string }).state, 'done');
      assert.equal((await drover(['signal', job.id, 'SIGKILL'])).code, 0);
    } finally {
      await f.tb.host('h2').limitIncoming(null);
    }
  });

  test('drover drain empties h1 of 6 mixed jobs onto h2 and h3; all verify; a killed controller is replaced mid-drain', async () => {
    const names = ['memory', 'pipeline', 'threads', 'files', 'redis', 'python'] as const;
    const started: { id: string; dir: string }[] = [];
    for (const name of names) {
      const job = await launch('h1', name, 'drain', name === 'memory' ? 64 : undefined);
      started.push({ id: job.id, dir: job.dir });
    }
    for (const s of started) await waitReady(s.dir, 30_000);
    // The drain runs one job at a time; the controller is killed once the first has moved.
    const draining = drover(['--timeout', '15', 'drain', 'h1', '--parallel', '1']);
    await waitFor(async () => {
      const ops = await json<{ ops: { kind: string; items?: { state: string }[] }[] }>(['ops']);
      return ops.ops.some(
        (o) => o.kind === 'drain' && (o.items ?? []).some((i) => i.state === 'done'),
      );
    }, 60_000);
    await f.controller.kill();
    const cut = await draining;
    assert.notEqual(
      cut.code,
      0,
      'the CLI cannot have seen the end of a drain whose controller died',
    );
    f.controller = await ControllerProcess.start(f.tb, { id: 'ctl-test-2' });
    // The new controller takes the lease once the old one's lapses, and finishes the drain.
    const done = await waitForValue(async () => {
      const ops = await json<{
        ops: {
          kind: string;
          state: string;
          opId: string;
          items?: { jobId: string; state: string; destination: string | null }[];
        }[];
      }>(['ops']);
      const d = ops.ops.find((o) => o.kind === 'drain');
      return d && d.state !== 'running' ? d : undefined;
    }, 180_000);
    assert.equal(done.state, 'done', JSON.stringify(done.items));
    assert.equal(done.items!.length, 6);
    const jobs = await json<{ jobs: { id: string; host: string; state: string }[] }>(['jobs']);
    for (const s of started) {
      const live = jobs.jobs.filter((j) => j.id === s.id && j.state === 'running');
      assert.equal(live.length, 1, `${s.id} is live on ${live.length} hosts`);
      const where = live[0]!.host;
      assert.ok(where === 'h2' || where === 'h3', `${s.id} is on ${where}`);
      assert.equal((await requestVerdict(s.dir, signaller(f.agent(where), s.id), 30_000)).ok, true);
      await drover(['signal', s.id, 'SIGKILL']);
    }
    const hosts = await json<{ hosts: { host: string; cordoned: boolean }[] }>(['hosts']);
    assert.equal(
      hosts.hosts.find((h) => h.host === 'h1')?.cordoned,
      true,
      'the drained host is left cordoned',
    );
    assert.equal((await drover(['uncordon', 'h1'])).code, 0);
  });

  test('bad input: clear message, documented exit code, nothing changes', async () => {
    const dir = join(f.runDir, 'shared', 'cli-bad');
    mkdirSync(dir, { recursive: true });
    const job = await json<{ id: string }>([
      'run',
      '--host',
      'h3',
      '--',
      ...workloadCommand('python', { dir }),
    ]);
    await waitReady(dir, 20_000);
    const cases: [string[], number, RegExp][] = [
      [['migrate', 'job-nope', '--to', 'h2'], 3, /no running job job-nope/],
      [['migrate', job.id, '--to', 'h9'], 3, /no host h9/],
      [['migrate', job.id, '--mode', 'sideways'], 2, /expected one of|Invalid values/i],
      [['frobnicate'], 2, /Unknown argument|Unknown command/i],
      [['run', '--host', 'h2', '--memory', 'lots', '--', 'true'], 2, /memory/],
    ];
    assert.equal((await drover(['cordon', 'h1'])).code, 0);
    cases.push([['migrate', job.id, '--to', 'h1'], 4, /cordoned/]);
    for (const [args, code, message] of cases) {
      const r = await drover(args);
      assert.equal(r.code, code, `drover ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, `drover ${args.join(' ')}`);
    }
    assert.equal((await drover(['uncordon', 'h1'])).code, 0);
    // An unreachable host: h2's agent is gone (its heartbeats stop); moving a job there is refused.
    await f.agent('h2').kill();
    try {
      await waitFor(async () => {
        const { hosts } = await json<{ hosts: { host: string; reachable: boolean }[] }>(['hosts']);
        return hosts.some((h) => h.host === 'h2' && !h.reachable);
      }, 20_000);
      const r = await drover(['migrate', job.id, '--to', 'h2']);
      assert.equal(r.code, 4, r.stderr);
      assert.match(r.stderr, /host h2 is unreachable/);
    } finally {
      await f.agent('h2').start();
    }
    // Nothing changed: the job still runs on h3 and verifies itself.
    const jobs = await json<{ jobs: { id: string; host: string; state: string }[] }>(['jobs']);
    assert.deepEqual(
      jobs.jobs.filter((j) => j.id === job.id).map((j) => [j.host, j.state]),
      [['h3', 'running']],
    );
    assert.equal((await requestVerdict(dir, signaller(f.agent('h3'), job.id), 20_000)).ok, true);
    await drover(['signal', job.id, 'SIGKILL']);
  });
});
