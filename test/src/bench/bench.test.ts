/**
 * The bench harness's pure pieces: medians with min and max, ratios and targets, the table, the
 * heartbeat gap, /proc parsing, and the simulated agents — whose replies must have exactly the
 * fields a real agent's have, pass the agent API's request validation, and be accepted by the
 * controller's host registry. Timings are never asserted.
 */
import { macFor } from '@drover/protocol';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, blankRecord, compileAgentConfig } from '@drover/agent';
import { newSecret } from '@drover/common';
import { AgentClient, Bus } from '@drover/bus';
import { HostRegistry } from '@drover/controller';
import { AgentOps, heartbeatSubject, JobKind, type AgentInfo } from '@drover/protocol';
import { Testbed } from '@drover/testbed';
import { parallelDumpScript, parseParallelDump } from './baselines.js';
import { longestGap } from './heartbeat-gap.js';
import { frozenWindow } from './migration-bench.js';
import {
  cgroupCpuFile,
  childrenNamed,
  parseCgroupCpu,
  parseStat,
  parseStatus,
} from './proc-stat.js';
import {
  figureRatio,
  renderMarkdown,
  renderNotes,
  renderTable,
  targetMet,
  Unit,
  type Figure,
} from './report.js';
import { jobLayout } from './scale-bench.js';
import { distributeJobs, SimFleet, simAgentInfo, simJobInfo } from './sim-agent.js';
import { ratio, summarize } from './stats.js';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

test('summarize: median of odd and even counts, min, max; non-finite values dropped', () => {
  assert.deepEqual(summarize([5, 1, 3]), { median: 3, min: 1, max: 5, n: 3, values: [5, 1, 3] });
  const even = summarize([4, 1, 3, 2]);
  assert.equal(even.median, 2.5);
  assert.equal(even.min, 1);
  assert.equal(even.max, 4);
  const dirty = summarize([NaN, 7, Infinity]);
  assert.equal(dirty.n, 1);
  assert.equal(dirty.median, 7);
  const empty = summarize([]);
  assert.equal(empty.n, 0);
  assert.ok(Number.isNaN(empty.median));
  assert.ok(Number.isNaN(ratio(1, 0)));
  assert.equal(ratio(3, 2), 1.5);
});

const fig = (over: Partial<Figure>): Figure => ({
  section: 'migration 1024 MiB stop-copy',
  name: 'total',
  unit: Unit.ms,
  summary: summarize([1200, 1000, 1100]),
  ...over,
});

test('ratios against a baseline and targets on the median or on the ratio', () => {
  const f = fig({
    baseline: { name: 'floor', median: 500 },
    target: { op: '<=', value: 1.2, of: 'ratio', text: '≤ 1.2× floor' },
  });
  assert.equal(figureRatio(f), 2.2);
  assert.equal(targetMet(f), false);
  assert.equal(targetMet(fig({ target: { op: '<=', value: 1100, of: 'median', text: '' } })), true);
  assert.equal(
    targetMet(fig({ target: { op: '>=', value: 1101, of: 'median', text: '' } })),
    false,
  );
  assert.equal(targetMet(fig({})), null);
  // Nothing measured: the target can be neither met nor missed.
  assert.equal(
    targetMet(
      fig({ summary: summarize([]), target: { op: '<=', value: 1, of: 'median', text: '' } }),
    ),
    null,
  );
});

test('the table groups figures by section and prints median, min, max, ratio and target', () => {
  const figures: Figure[] = [
    fig({
      baseline: { name: 'floor', median: 500 },
      target: { op: '<=', value: 1.2, of: 'ratio', text: '≤ 1.2× floor' },
    }),
    fig({
      section: 'link h1 → h2',
      name: 'raw TCP',
      unit: Unit.mbps,
      summary: summarize([1321.4]),
    }),
  ];
  const lines = renderTable(figures).split('\n');
  assert.match(lines[0]!, /^figure\s+median\s+min\s+max\s+unit\s+n\s+vs baseline\s+target$/);
  assert.equal(lines[2], '[migration 1024 MiB stop-copy]');
  assert.match(
    lines[3]!,
    /^total\s+1100\s+1000\s+1200\s+ms\s+3\s+2\.20× floor\s+≤ 1\.2× floor SHORT$/,
  );
  assert.equal(lines[4], '[link h1 → h2]');
  assert.match(lines[5]!, /^raw TCP\s+1321\s+1321\s+1321\s+MB\/s\s+1$/);
  assert.equal(
    renderNotes([...figures, fig({ name: 'jobs', note: 'FAILED: too big' })]),
    '[migration 1024 MiB stop-copy] jobs: FAILED: too big',
  );
  const md = renderMarkdown(figures);
  assert.match(
    md,
    /\| total \| 1100 \| 1000 \| 1200 \| ms \| 3 \| 2\.20× floor \| ≤ 1\.2× floor SHORT \|/,
  );
});

test('the heartbeat gap is the longest one overlapping the window', () => {
  const beats = [0, 10, 20, 500, 510, 520, 2000, 2010].map((t, n) => JSON.stringify({ t, n }));
  const text = beats.join('\n') + '\n{"t":20'; // a torn last line is skipped
  assert.equal(longestGap(text, 15, 510), 480);
  assert.equal(longestGap(text, 15, 600), 1480); // a gap that starts inside and ends after counts
  assert.equal(longestGap(text, 600, 1990), 1480);
  assert.equal(longestGap(text, 0, 30), 480); // the gap starting inside the window counts
  assert.equal(longestGap(text, 3000, 4000), 0);
});

test("a cluster checkpoint's floor: every job dumped raw at once, timed first start to last end", () => {
  const script = parallelDumpScript('/dev/shm/floor-h1', [101, 202, 303]);
  for (const pid of [101, 202, 303]) {
    assert.match(
      script,
      new RegExp(`criu dump -t ${pid} -D \\$d/${pid} --leave-running .* & w="\\$w \\$!"`),
    );
  }
  // Started at once (in the background), then every one waited for, then the end time.
  assert.ok(script.indexOf('t0=') < script.indexOf('criu dump'));
  assert.ok(script.lastIndexOf('criu dump') < script.indexOf('wait $x'));
  assert.ok(script.indexOf('wait $x') < script.indexOf('t1='));
  assert.deepEqual(parseParallelDump('noise\n1000000000 1250500000 4096\n'), {
    ms: 250.5,
    bytes: 4096,
  });
  assert.throws(() => parseParallelDump('criu: command not found'), /cannot read/);
});

test('/proc/PID/stat and status parsing', () => {
  const stat = '1234 (node (worker) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 11 0';
  assert.deepEqual(parseStat(stat, 100), { self: 3, children: 0.1 });
  const status = 'Name:\tnode\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n';
  assert.deepEqual(parseStatus(status), { rssBytes: 100 * 2 ** 20, peakBytes: 200 * 2 ** 20 });
});

test("a host's cgroup CPU: v1 cpuacct first, else v2's cpu.stat", () => {
  const mounts = [
    'cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0',
    'cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0',
    'cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0',
    'proc /proc proc rw 0 0',
  ].join('\n');
  const v1 = '4:memory:/run-h1\n2:cpuacct:/run-h1\n1:cpu:/run-h1\n0::/run-h1\n';
  assert.deepEqual(cgroupCpuFile(v1, mounts), {
    path: '/sys/fs/cgroup/cpuacct/run-h1/cpuacct.usage',
    v2: false,
  });
  // The root cgroup, and a v1 hierarchy that names cpu and cpuacct together.
  const both = 'cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0';
  assert.deepEqual(cgroupCpuFile('3:cpu,cpuacct:/\n', both), {
    path: '/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage',
    v2: false,
  });
  const v2only = 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0';
  assert.deepEqual(cgroupCpuFile('0::/run-h2\n', v2only), {
    path: '/sys/fs/cgroup/run-h2/cpu.stat',
    v2: true,
  });
  assert.equal(cgroupCpuFile('0::/x\n', 'proc /proc proc rw 0 0'), null);
  assert.equal(parseCgroupCpu('2500000000\n', false), 2.5);
  assert.equal(parseCgroupCpu('usage_usec 1500000\nuser_usec 1000000\n', true), 1.5);
  assert.ok(Number.isNaN(parseCgroupCpu('nr_periods 0\n', true)));
});

test('children of a process by name', async () => {
  const sleeper = spawn('sleep', ['30']);
  try {
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(childrenNamed(process.pid, 'sleep'), [sleeper.pid]);
    assert.deepEqual(childrenNamed(process.pid, 'no-such-name'), []);
  } finally {
    sleeper.kill('SIGKILL');
  }
});

test('job layouts add up', () => {
  assert.deepEqual(distributeJobs(10, 3, 4), [4, 3, 3]);
  const l = jobLayout(10_000, 1000, 3, 100);
  assert.equal(l.length, 1000);
  assert.deepEqual(l.slice(0, 3), [100, 100, 100]);
  assert.equal(
    l.reduce((a, b) => a + b, 0),
    10_000,
  );
  assert.ok(l.slice(3).every((n) => n === 10 || n === 9));
});

/** Sorted keys, recursively, of plain objects; arrays by their first element. */
function shape(v: unknown): unknown {
  if (Array.isArray(v)) return v.length ? [shape(v[0])] : [];
  if (v !== null && typeof v === 'object')
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, shape((v as Record<string, unknown>)[k])]),
    );
  return v === null ? 'null|' : typeof v;
}

test('simulated replies have the fields and types a real agent reports', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-bench-test-'));
  try {
    const real = new Agent(compileAgentConfig({ hostId: 'real', stateDir: dir }));
    await real.store.init();
    const rec = blankRecord('job-a', real.config.hostId, join(dir, 'jobs', 'job-a'));
    await real.store.save({
      ...rec,
      // Adopted: its main process is the record's (a namespaced job's would be looked up among
      // live processes, and this fixture has none).
      kind: JobKind.adopted,
      state: 'running',
      command: ['/bin/true'],
      rootPid: 5,
      mainPid: 7,
      mainPidInside: 3,
      network: {
        mode: 'job',
        address: '10.78.0.2',
        prefixLength: 24,
        gateway: '10.78.0.1',
        mac: macFor('10.78.0.2'),
      },
    });
    const realJob = (await real.list()).jobs[0]!;
    const realInfo = await real.info();
    const sim = simJobInfo('sim-0000', 1, new Date().toISOString());
    const simInfo = simAgentInfo('sim-0000', [sim], {
      startedAt: Date.now(),
      cpuFlags: ['fpu'],
      usedBytes: 0,
    });
    assert.deepEqual(shape(sim), shape(realJob));
    assert.deepEqual(shape(simInfo), shape(realInfo));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('simulated agents answer over NATS through the real agent API, beat, and move jobs', async () => {
  const tb = await Testbed.create({ hosts: 1, nats: 'single' });
  let fleet: SimFleet | null = null;
  const bus = await Bus.connect({ servers: tb.nats!.urls, name: 'bench-test' });
  try {
    fleet = await SimFleet.start({
      servers: tb.nats!.urls,
      hosts: ['sim-0000', 'sim-0001'],
      jobsPerHost: [2, 1],
      connections: 1,
      heartbeatMs: 200,
      cpuFlags: ['fpu', 'sse2'],
    });
    const beats: AgentInfo[] = [];
    const stop = bus.subscribe(heartbeatSubject('sim-0001'), (_s, v) => beats.push(v as AgentInfo));
    await bus.flush();
    fleet.startHeartbeats();
    const a = new AgentClient(bus, 'sim-0000');
    const { jobs } = await a.call('list', {});
    assert.equal(jobs.length, 2);
    const inspected = await a.call('inspect', { jobId: jobs[0]!.id });
    assert.equal(inspected.processes.length, 3);
    assert.ok((inspected.memoryUsageBytes ?? 0) > 0);
    // Requests are validated like a real agent's: an unknown field is refused.
    await assert.rejects(
      a.call('list', { extra: 1 } as never),
      /INVALID_ARGUMENT|unknown|not allowed/i,
    );
    assert.throws(() => AgentOps.list.parse({ extra: 1 }));
    await assert.rejects(
      a.call('inspect', { jobId: 'job-none' }),
      (e: Error & { code?: string }) => e.code === 'NOT_FOUND',
    );
    const ticket = newSecret();
    await new AgentClient(bus, 'sim-0001').call('migrate-authorize', {
      jobId: jobs[0]!.id,
      source: 'sim-0000',
      ticket,
    });
    const m = await a.call('migrate', { jobId: jobs[0]!.id, destination: 'sim-0001', ticket });
    assert.equal(m.state, 'done');
    assert.equal((await new AgentClient(bus, 'sim-0001').call('list', {})).jobs.length, 2);
    assert.equal((await a.call('inspect', { jobId: jobs[0]!.id })).state, 'migrated');
    for (let i = 0; i < 50 && beats.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
    stop();
    assert.ok(beats.length >= 2, `only ${beats.length} heartbeats`);
    // The controller's host registry takes the heartbeat and its persisted form validates.
    const reg = new HostRegistry({ unreachableAfterMs: 1000 });
    reg.observe(beats.at(-1)!);
    assert.equal(
      HostRegistry.fromJSON(reg.toJSON(), { unreachableAfterMs: 1000 }).list().length,
      1,
    );
    assert.equal(beats.at(-1)!.jobs.length, 2);
    assert.ok(fleet.requests('list') >= 2);
  } finally {
    await fleet?.close();
    await bus.close();
    await tb.teardown();
  }
});

test('the bench explains itself on --help and refuses bad options in one line, without a stack trace', async () => {
  const run = (args: string[]): Promise<{ code: number; out: string; err: string }> =>
    new Promise((resolve, reject) => {
      const c = spawn(
        process.execPath,
        [fileURLToPath(new URL('./main.js', import.meta.url)), ...args],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let out = '';
      let err = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.stderr.on('data', (d: Buffer) => (err += d.toString()));
      c.once('error', reject);
      c.once('exit', (code) => resolve({ code: code ?? -1, out, err }));
    });
  const help = await run(['--help']);
  assert.equal(help.code, 0, help.err);
  assert.match(help.out, /^Usage: npm run bench/);
  assert.equal(help.err, '');
  for (const bad of [['--nope'], ['--only', 'x'], ['--reps', '0']]) {
    const r = await run(bad);
    assert.equal(r.code, 2, bad.join(' '));
    assert.match(r.err, /^bench: .+\nbench: see --help\n$/);
    assert.doesNotMatch(r.err, /\n\s+at /);
  }
});

test("a run's frozen window, step by step: the source's from the freeze, the destination's from the stream", () => {
  const rec = (role: 'source' | 'destination', timeline: [string, number][]) =>
    ({ role, timeline: timeline.map(([phase, atMs]) => ({ phase, atMs })) }) as never;
  const src = rec('source', [
    ['preparing', 0],
    ['prepared', 40],
    ['stream-open', 60],
    ['quiesced', 70],
    ['frozen', 85],
    ['dumping', 86],
    ['result', 400],
  ]);
  const dst = rec('destination', [
    ['prepared', 0],
    ['receiving', 30],
    ['received', 250],
    ['running', 380],
  ]);
  assert.equal(
    frozenWindow(src, dst),
    'source: frozen +15, dumping +1, result +314 | destination: received +220, running +130',
  );
  assert.equal(frozenWindow(src, null), 'source: frozen +15, dumping +1, result +314');
});
