/**
 * A coordinated cluster checkpoint of many jobs across three hosts, through the `drover` CLI
 * against a real controller: total time, the cut (how long the workload stayed frozen), the
 * freeze skew, the slowest job's dump and the store's throughput — the cut compared with its
 * floor, a raw `criu dump` of the same jobs all started at once on their hosts into tmpfs.
 */
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Bus, ControllerClient } from '@drover/bus';
import type { OperationRecord } from '@drover/protocol';
import { AgentCluster, ControllerProcess, Testbed } from '@drover/testbed';
import { drover } from '../cluster/cli.js';
import { waitReady, workloadCommand } from '../workloads/mod.js';
import { parallelDumpRun } from './baselines.js';
import type { BenchLog } from './bench-log.js';
import { Unit, type Figure } from './report.js';
import { summarize } from './stats.js';

/** Options of the checkpoint benchmark. */
export interface CheckpointOptions {
  jobs: number;
  hosts: number;
  /** Memory of each job (the memory workload), MiB. */
  mb: number;
  reps: number;
  log: BenchLog;
}

const SECTION = 'cluster checkpoint';

/** The workload: node jobs holding `mb` MiB, Python programs and shell pipelines on every host. */
const MIX = ['memory', 'python', 'pipeline'] as const;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Run the checkpoint benchmark; returns its figures. */
export async function benchCheckpoint(o: CheckpointOptions): Promise<Figure[]> {
  // The testbed's default store (2 GiB) is room enough: deleted image sets give their space back
  // (nats-server >= 2.12; the bus's object-files test shows it).
  const tb = await Testbed.create({ hosts: o.hosts, nats: 'single' });
  // DROVER_BENCH_KEEP=DIR keeps each checkpoint's operation record and the run's logs there.
  const keep = process.env['DROVER_BENCH_KEEP']
    ? join(process.env['DROVER_BENCH_KEEP'], tb.runId)
    : null;
  if (keep) mkdirSync(keep, { recursive: true });
  let cluster: AgentCluster | null = null;
  let ctl: ControllerProcess | null = null;
  let bus: Bus | null = null;
  try {
    const urls = [...tb.nats!.urls];
    cluster = await AgentCluster.start(tb, { logLevel: 'info', heartbeatMs: 2000 });
    // DROVER_BENCH_DUMPS_PER_HOST=N runs the controller with `--dumps-per-host N` (to compare).
    const perHost = process.env['DROVER_BENCH_DUMPS_PER_HOST'];
    ctl = await ControllerProcess.start(tb, {
      id: 'ctl-bench-ckpt',
      logLevel: 'info',
      ...(perHost ? { extraArgs: ['--dumps-per-host', perHost] } : {}),
    });
    bus = await Bus.connect({ servers: urls, name: 'bench-ckpt', requestTimeoutMs: 600_000 });
    const client = new ControllerClient(bus);
    for (let i = 0; (await client.call('hosts', {})).hosts.length < o.hosts; i++) {
      if (i > 200) throw new Error('the controller does not see every host');
      await sleep(100);
    }
    o.log(`checkpoint: starting ${o.jobs} jobs (${MIX.join(', ')}) on ${o.hosts} hosts`);
    const jobs: { id: string; host: string; dir: string; pid: number }[] = [];
    for (let i = 0; i < o.jobs; i++) {
      const host = tb.hosts[i % o.hosts]!.name;
      const dir = join(tb.runDir, 'shared', `ckpt-${i}`);
      mkdirSync(dir, { recursive: true });
      const kind = MIX[Math.floor(i / o.hosts) % MIX.length]!;
      const job = await cluster.agent(host).client.call('run', {
        command: workloadCommand(kind, kind === 'memory' ? { dir, mb: o.mb } : { dir }),
        env: { UV_USE_IO_URING: '0' },
        name: `ckpt-${i}`,
      });
      jobs.push({ id: job.id, host, dir, pid: job.rootPid! });
    }
    for (const j of jobs) await waitReady(j.dir, 120_000);

    // What a drain's planning asks of a real agent for each job: its preflight.
    const preflightMs: number[] = [];
    for (const j of jobs) {
      const t0 = performance.now();
      await cluster.agent(j.host).client.call('preflight', { jobId: j.id });
      preflightMs.push(performance.now() - t0);
    }

    // The floor: every job dumped raw by CRIU, all at once on their hosts, into tmpfs; the cut
    // needs every host's dumps, so a run's floor is its slowest host.
    const floor: number[] = [];
    for (let r = 0; r < o.reps; r++) {
      const perHost = await Promise.all(
        tb.hosts.map((h) =>
          parallelDumpRun(
            h,
            jobs.filter((j) => j.host === h.name).map((j) => j.pid),
          ),
        ),
      );
      floor.push(Math.max(...perHost.map((x) => x.ms)));
      o.log(`checkpoint: raw parallel dump floor ${Math.round(floor.at(-1)!)} ms`);
    }
    const floorMedian = summarize(floor).median;

    // Each job alone: one leave-running checkpoint per job, one job at a time.
    const alone: number[] = [];
    for (let r = 0; r < o.reps; r++) {
      let slowest = 0;
      for (const j of jobs.filter((_, i) => i < o.hosts)) {
        const img = await cluster
          .agent(j.host)
          .client.call(
            'checkpoint',
            { jobId: j.id, leaveRunning: true, key: randomBytes(32).toString('base64') },
            120_000,
          );
        slowest = Math.max(slowest, img.dumpMs);
        await cluster.agent(j.host).client.call('images-delete', { imageId: img.imageId });
      }
      alone.push(slowest);
    }
    const aloneMedian = summarize(alone).median;

    const total: number[] = [];
    const cut: number[] = [];
    const skew: number[] = [];
    const cutSkew: number[] = [];
    const slowestIn: number[] = [];
    const storing: number[] = [];
    const setMiB: number[] = [];
    const storeRate: number[] = [];
    const hostSkew: number[] = [];
    for (let r = 0; r < o.reps; r++) {
      const name = `bench-${r}`;
      const t0 = performance.now();
      const res = await drover(
        urls,
        ['--json', 'checkpoint', '--all', '--name', name, '--leave-running'],
        600_000,
      );
      const wall = performance.now() - t0;
      if (res.code !== 0)
        throw new Error(`drover checkpoint exited ${res.code}: ${res.stderr}${res.stdout}`);
      const op = JSON.parse(res.stdout) as OperationRecord;
      if (keep) writeFileSync(join(keep, `op-${name}.json`), JSON.stringify(op, null, 2));
      total.push(wall);
      cut.push(op.frozenMs ?? NaN);
      skew.push(op.freezeSkewMs ?? NaN);
      cutSkew.push(op.requestSkewMs ?? NaN);
      slowestIn.push(Math.max(...(op.members ?? []).map((m) => m.dumpMs ?? 0)));
      const at = (p: string): number => op.phases?.find((x) => x.phase === p)?.atMs ?? NaN;
      storing.push(at('finished') - at('storing'));
      const setBytes = (op.members ?? []).reduce((n, m) => n + (m.sizeBytes ?? 0), 0);
      setMiB.push(setBytes / 2 ** 20);
      storeRate.push(setBytes / 1e6 / ((at('finished') - at('storing')) / 1000));
      hostSkew.push(Math.max(...(op.freezes ?? []).map((f) => f.skewMs)));
      o.log(
        `checkpoint ${name}: ${Math.round(wall)} ms, frozen ${op.frozenMs} ms, cut skew ${op.requestSkewMs} ms, frozen-report skew ${op.freezeSkewMs} ms`,
      );
      const set = await client.call('images-inspect', { name });
      const gone = await client.call('images-delete', { name });
      // What the set holds: its files, and the objects they are in (each file alone, or a pack).
      o.log(
        `checkpoint ${name}: ${set.jobs.reduce((n, j) => n + j.files.length, 0)} files in ${gone.objects} objects`,
      );
      const jsz = (await (await fetch(`${tb.nats!.servers[0]!.monitorUrl}/jsz`)).json()) as {
        storage: number;
      };
      o.log(
        `checkpoint: JetStream file storage after deleting ${name}: ${(jsz.storage / 2 ** 20).toFixed(0)} MiB`,
      );
    }
    for (const j of jobs)
      await cluster.agent(j.host).client.call('signal', { jobId: j.id, signal: 'SIGKILL' });
    const base = { name: 'slowest dump alone', median: aloneMedian };
    const floorBase = { name: 'parallel floor', median: floorMedian };
    const fig = (f: Omit<Figure, 'section'>): Figure => ({
      section: `${SECTION}: ${o.jobs} jobs on ${o.hosts} hosts`,
      ...f,
    });
    return [
      fig({
        name: 'total, `drover checkpoint --all --leave-running` (wall)',
        unit: Unit.ms,
        summary: summarize(total),
        baseline: base,
        note: 'includes storing every image in the JetStream object store',
      }),
      fig({
        name: 'the floor: raw `criu dump` of every job, all at once per host, to tmpfs',
        unit: Unit.ms,
        summary: summarize(floor),
        note: 'the slowest host of each run; no freezer, no sealing, no job directory',
      }),
      fig({
        name: 'the cut: first freeze → thaw (workload frozen)',
        unit: Unit.ms,
        summary: summarize(cut),
        baseline: floorBase,
        target: { op: '<=', value: 1.2, of: 'ratio', text: '≤ 1.2× parallel floor' },
      }),
      fig({
        name: 'the cut: first freeze → thaw (workload frozen)',
        unit: Unit.ms,
        summary: summarize(cut),
        baseline: base,
      }),
      fig({
        name: 'cut skew (first to last freeze write returned)',
        unit: Unit.ms,
        summary: summarize(cutSkew),
        target: { op: '<=', value: 5, of: 'median', text: '≤ 5 ms' },
        note: 'no task of a job runs user code once its freeze write has returned (CHECKPOINT.md, What the skew measures)',
      }),
      fig({
        name: 'frozen-report skew (first to last job seen frozen)',
        unit: Unit.ms,
        summary: summarize(skew),
        note: 'adds each kernel parking the tasks and the watcher getting a CPU',
      }),
      fig({
        name: "freeze skew within a host (the largest host's)",
        unit: Unit.ms,
        summary: summarize(hostSkew),
        note: 'each host freezes its jobs with one request (freeze-many)',
      }),
      fig({
        name: 'slowest job dump within the cut',
        unit: Unit.ms,
        summary: summarize(slowestIn),
        baseline: base,
      }),
      fig({
        name: 'slowest single-job dump, one job at a time',
        unit: Unit.ms,
        summary: summarize(alone),
      }),
      fig({ name: 'storing images in JetStream', unit: Unit.ms, summary: summarize(storing) }),
      fig({
        name: 'store throughput (image set size / storing)',
        unit: Unit.mbps,
        summary: summarize(storeRate),
        target: { op: '>=', value: 150, of: 'median', text: '≥ 150 MB/s' },
      }),
      fig({ name: 'image set size', unit: Unit.mib, summary: summarize(setMiB) }),
      {
        section: 'preflight',
        name: 'preflight of one job by a real agent (each job of the checkpoint, one at a time)',
        unit: Unit.ms,
        summary: summarize(preflightMs),
      },
    ];
  } finally {
    await bus?.close().catch(() => undefined);
    await ctl?.kill().catch(() => undefined);
    await cluster?.close().catch(() => undefined);
    if (keep) cpSync(tb.logDir, join(keep, 'logs'), { recursive: true });
    await tb.teardown();
  }
}
