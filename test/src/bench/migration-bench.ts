/**
 * Migration of a memory job at several sizes, in stop-and-copy and post-copy modes, on real
 * agents in two emulated hosts — and, in the same run on the same hosts, the baselines it is
 * compared with (baselines.ts): CRIU's floor on tmpfs, the by-hand dump/scp/restore, the link.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MigrationRecord } from '@drover/protocol';
import { SCRATCH_TMPFS_OPTION } from '@drover/agent';
import { AGENT_STATE_DIR, AgentCluster, Testbed, type AgentHandle } from '@drover/testbed';
import { requestVerdict, waitReady, workloadCommand } from '../workloads/mod.js';
import {
  byHandRun,
  floorRun,
  handJobDir,
  killHandJob,
  linkRun,
  startHandJob,
  type BaselineRun,
} from './baselines.js';
import type { BenchLog } from './bench-log.js';
import { heartbeatGap } from './heartbeat-gap.js';
import { cgroupCpuOf, childrenNamed, ProcessMeter, type Metered } from './proc-stat.js';
import { Unit, type Figure, type Target } from './report.js';
import { rate, summarize, summarizeBy } from './stats.js';

/** Options of the migration benchmark. */
export interface MigrationOptions {
  sizesMb: readonly number[];
  reps: number;
  log: BenchLog;
  /** Modes to run (default both). */
  modes?: readonly Mode[];
  /** Skip the baselines (development). */
  noBaselines?: boolean;
  /**
   * The job's network: `host` (the host's, the default) or `job` (its own namespace and address
   * on the job segment, locked while it is frozen: docs/NETWORK.md).
   */
  net?: Net;
}

type Mode = 'stop-copy' | 'post-copy';
export type Net = 'host' | 'job';

/** One Drover migration as measured. */
export interface MigrationRun {
  record: MigrationRecord;
  gapMs: number;
  wallMs: number;
  src: Metered;
  dst: Metered;
}

const JOB_ENV = { UV_USE_IO_URING: '0' };
const MiB = 2 ** 20;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Migrate `jobId` from `from` to `to` once, metering both agents. */
export async function migrateOnce(
  cluster: AgentCluster,
  from: AgentHandle,
  to: AgentHandle,
  jobId: string,
  dir: string,
  mode: Mode,
): Promise<MigrationRun> {
  const meter = new ProcessMeter([from.process!.pid, to.process!.pid]);
  meter.start();
  const w0 = Date.now();
  const t0 = performance.now();
  const record = await cluster.migrate(jobId, from.hostId, to.hostId, {
    mode,
    timeoutMs: 900_000,
  });
  const wallMs = performance.now() - t0;
  // CRIU's CPU reaches an agent's children's only once the agent has reaped it: wait until no
  // child of either agent is a CRIU (running, or exited and not yet reaped) — the page server,
  // the lazy-pages daemon or a lazy dump may end just after the move is reported done.
  const agents = [from.process!.pid, to.process!.pid];
  for (let i = 0; i < 300 && agents.some((p) => childrenNamed(p, 'criu').length > 0); i++) {
    await sleep(100);
  }
  const [src, dst] = meter.stop();
  const w1 = Date.now();
  await sleep(300); // the job's first heartbeats after it resumed
  return { record, gapMs: await heartbeatGap(dir, w0, w1), wallMs, src: src!, dst: dst! };
}

/** Run the migration benchmark and its baselines; returns the figures. */
export async function benchMigration(o: MigrationOptions): Promise<Figure[]> {
  const figures: Figure[] = [];
  const modes = o.modes ?? ['stop-copy', 'post-copy'];
  const net = o.net ?? 'host';
  // Secure, as `drover up` and the deployer run agents: TLS on the stream and the page channel.
  const tb = await Testbed.create({ hosts: 2, nats: 'single', secure: true });
  let cluster: AgentCluster | null = null;
  try {
    const shared = join(tb.runDir, 'shared');
    mkdirSync(shared, { recursive: true });
    // Production settings: info logs, the default heartbeat.
    cluster = await AgentCluster.start(tb, { logLevel: 'info', heartbeatMs: 2000 });
    for (const h of ['h1', 'h2']) {
      const cg = cgroupCpuOf(cluster.agent(h).process!.pid);
      o.log(`${h}: host CPU from ${cg?.path ?? 'nowhere (no cpuacct or cgroup v2)'}`);
    }
    const [h1, h2] = [tb.host('h1'), tb.host('h2')];
    const sshd = o.noBaselines ? null : await Promise.all([tb.startSshd(h1), tb.startSshd(h2)]);

    // The link, once for the run.
    let linkBps = NaN;
    if (!o.noBaselines) {
      const runs: number[] = [];
      for (let i = 0; i < o.reps; i++) {
        try {
          runs.push(await linkRun(h1, h2, 1024 * MiB, 7900 + i));
        } catch (err) {
          o.log(`link: run ${i + 1} failed: ${String(err).slice(0, 300)}`);
        }
      }
      const s = summarize(runs.map((b) => b / 1e6));
      linkBps = s.median * 1e6;
      figures.push({
        section: 'link h1 → h2',
        name: 'raw TCP throughput (1 GiB, Node sockets)',
        unit: Unit.mbps,
        summary: s,
      });
      o.log(`link: ${s.median.toFixed(0)} MB/s`);
    }

    for (const mb of o.sizesMb) {
      const dir = join(shared, `mem-${mb}`);
      mkdirSync(dir, { recursive: true });
      const hdir = handJobDir(shared, String(mb));
      mkdirSync(hdir, { recursive: true });
      o.log(`migration ${mb} MiB: starting the jobs (net ${net})`);
      const [job, hand] = await Promise.all([
        cluster.agent('h1').client.call('run', {
          command: workloadCommand('memory', { dir, mb }),
          env: JOB_ENV,
          name: `bench-${mb}`,
          ...(net === 'job' ? { network: jobAddress(tb, o.sizesMb.indexOf(mb)) } : {}),
        }),
        o.noBaselines ? Promise.resolve(null) : startHandJob(h1, hdir, mb),
      ]);
      await waitReady(dir, 180_000);

      // Baselines first: the floor on h1, then by hand h1 → h2 → h1 ...
      const floor: BaselineRun[] = [];
      const floorScratch: BaselineRun[] = [];
      const byHand: BaselineRun[] = [];
      if (hand && sshd) {
        // Interleaved: the machine's drift falls on both floors alike.
        for (let i = 0; i < o.reps; i++) {
          floor.push(await floorRun(hand));
          floorScratch.push(await floorRun(hand, 'scratch'));
        }
        o.log(`floor ${mb} MiB: ${summarizeBy(floor, (r) => r.totalMs).median.toFixed(0)} ms`);
        o.log(
          `floor on the scratch's tmpfs ${mb} MiB: ${summarizeBy(floorScratch, (r) => r.totalMs).median.toFixed(0)} ms`,
        );
        for (let i = 0; i < o.reps; i++) {
          const to = hand.host === h1 ? h2 : h1;
          byHand.push(await byHandRun(hand, to, sshd[to === h1 ? 0 : 1]!));
        }
        o.log(`by hand ${mb} MiB: ${summarizeBy(byHand, (r) => r.totalMs).median.toFixed(0)} ms`);
        await killHandJob(hand);
        figures.push(...baselineFigures(mb, floor, floorScratch, byHand));
      }

      let at = 'h1';
      const runs = new Map<Mode, MigrationRun[]>();
      for (const mode of modes) {
        const list: MigrationRun[] = [];
        for (let i = 0; i < o.reps; i++) {
          const next = at === 'h1' ? 'h2' : 'h1';
          const r = await migrateOnce(
            cluster,
            cluster.agent(at),
            cluster.agent(next),
            job.id,
            dir,
            mode,
          );
          if (r.record.state !== 'done') throw new Error(`migration ended ${r.record.state}`);
          list.push(r);
          at = next;
          o.log(
            `${mode} ${mb} MiB: frozen ${r.record.stats.frozenMs} ms, gap ${r.gapMs} ms, total ${r.record.stats.totalMs} ms`,
          );
          o.log(`  ${frozenWindow(r.record, readDestinationRecord(cluster.agent(at), r.record))}`);
        }
        runs.set(mode, list);
      }
      const verdict = await requestVerdict(
        dir,
        (sig) =>
          void cluster!
            .agent(at)
            .client.call('signal', { jobId: job.id, signal: sig as 'SIGUSR1' }),
        120_000,
      );
      await cluster.agent(at).client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
      for (const [mode, list] of runs) {
        figures.push(
          ...migrationFigures(mb, mode, net, list, {
            floor,
            floorScratch,
            byHand,
            linkBps,
            verified: verdict.ok
              ? 'the job verified its whole memory after the last move'
              : `VERIFY FAILED: ${verdict.details}`,
          }),
        );
      }
    }
    return figures;
  } finally {
    await cluster?.close().catch(() => undefined);
    await tb.teardown();
  }
}

function baselineFigures(
  mb: number,
  floor: BaselineRun[],
  floorScratch: BaselineRun[],
  byHand: BaselineRun[],
): Figure[] {
  const section = `baselines ${mb} MiB`;
  const f = (
    name: string,
    runs: BaselineRun[],
    pick: (r: BaselineRun) => number,
    note?: string,
  ): Figure => ({
    section,
    name,
    unit: Unit.ms,
    summary: summarizeBy(runs, pick),
    ...(note ? { note } : {}),
  });
  return [
    f('floor: criu dump to tmpfs', floor, (r) => r.dumpMs),
    f('floor: criu restore from tmpfs', floor, (r) => r.restoreMs),
    f('floor: dump + restore', floor, (r) => r.totalMs, 'one host, no network'),
    f(
      "floor on the scratch's tmpfs: dump + restore",
      floorScratch,
      (r) => r.totalMs,
      `the same on a tmpfs mounted like the agents' scratch (${SCRATCH_TMPFS_OPTION}), interleaved with the floor`,
    ),
    f('by hand: criu dump to disk', byHand, (r) => r.dumpMs),
    f('by hand: scp -r to the other host', byHand, (r) => r.copyMs),
    f('by hand: criu restore over ssh', byHand, (r) => r.restoreMs),
    f('by hand: total (the job is stopped throughout)', byHand, (r) => r.totalMs),
    f('by hand: downtime, job heartbeat gap', byHand, (r) => r.gapMs),
    {
      section,
      name: 'image size',
      unit: Unit.mib,
      summary: summarizeBy(floor.length ? floor : byHand, (r) => r.imageBytes / MiB),
    },
  ];
}

function migrationFigures(
  mb: number,
  mode: Mode,
  net: Net,
  runs: MigrationRun[],
  base: {
    floor: BaselineRun[];
    floorScratch: BaselineRun[];
    byHand: BaselineRun[];
    linkBps: number;
    verified: string;
  },
): Figure[] {
  const section = `migration ${mb} MiB ${mode}${net === 'job' ? ', own network' : ''}`;
  const gb = (mb * MiB) / 1e9;
  const med = (runs: BaselineRun[], pick: (r: BaselineRun) => number): number =>
    summarizeBy(runs, pick).median;
  const out: Figure[] = [];
  const add = (
    name: string,
    unit: Figure['unit'],
    pick: (r: MigrationRun) => number,
    extra: { baseline?: { name: string; median: number }; target?: Target; note?: string } = {},
  ): void => {
    const f: Figure = { section, name, unit, summary: summarizeBy(runs, pick) };
    if (extra.baseline && Number.isFinite(extra.baseline.median)) f.baseline = extra.baseline;
    if (extra.target) f.target = extra.target;
    if (extra.note) f.note = extra.note;
    out.push(f);
  };
  const byHandGap = med(base.byHand, (r) => r.gapMs);
  const byHandTotal = med(base.byHand, (r) => r.totalMs);
  const floorTotal = med(base.floor, (r) => r.totalMs);
  add('downtime, job heartbeat gap', Unit.ms, (r) => r.gapMs, {
    note: base.verified,
    baseline: { name: 'by hand', median: byHandGap },
    ...(mode === 'post-copy' && mb >= 1024
      ? { target: { op: '<=', value: 100, of: 'median', text: '≤ 100 ms' } as Target }
      : {}),
  });
  add('downtime, Drover frozenMs', Unit.ms, (r) => r.record.stats.frozenMs);
  if (mb >= 1024) {
    add('downtime, job heartbeat gap', Unit.ms, (r) => r.gapMs, {
      baseline: { name: 'by hand', median: byHandGap },
      target: { op: '<=', value: 1 / 3, of: 'ratio', text: '≥ 3× shorter than by hand' },
    });
  }
  add('total', Unit.ms, (r) => r.record.stats.totalMs, {
    baseline: { name: 'floor', median: floorTotal },
    ...(mode === 'stop-copy'
      ? {
          target: {
            op: '<=',
            value: 1.3,
            of: 'ratio',
            text: '≤ 1.3× floor (goal 1.2×)',
          } as Target,
        }
      : {}),
  });
  if (mode === 'stop-copy') {
    add('total', Unit.ms, (r) => r.record.stats.totalMs, {
      baseline: {
        name: "floor on the scratch's tmpfs",
        median: med(base.floorScratch, (r) => r.totalMs),
      },
    });
  }
  add('total', Unit.ms, (r) => r.record.stats.totalMs, {
    baseline: { name: 'by hand', median: byHandTotal },
    ...(mb >= 1024
      ? {
          target: {
            op: '<=',
            value: 1 / 3,
            of: 'ratio',
            text: '≥ 3× faster than by hand',
          } as Target,
        }
      : {}),
  });
  add(
    mode === 'stop-copy' ? 'dump, pages sent to the destination as it runs' : 'dump',
    Unit.ms,
    (r) => r.record.stats.dumpMs,
    { baseline: { name: 'floor dump', median: med(base.floor, (r) => r.dumpMs) } },
  );
  add(
    'transfer (stream of small images and the job directory)',
    Unit.ms,
    (r) => r.record.stats.transferMs,
  );
  add('restore', Unit.ms, (r) => r.record.stats.restoreMs, {
    baseline: { name: 'floor restore', median: med(base.floor, (r) => r.restoreMs) },
  });
  // In every mode the pages go CRIU to CRIU; memory in the stream would mean they did not.
  const eager = runs.filter((r) => r.record.stats.bytes > (mb * MiB) / 2).length;
  add('bytes through the stream', Unit.mib, (r) => r.record.stats.bytes / MiB, {
    note: eager
      ? `${eager} of ${runs.length} runs carried the whole memory through the stream`
      : 'memory pages go CRIU to CRIU, not through the stream',
  });
  if (mode === 'stop-copy') {
    // The pages' way: CRIU to CRIU over TLS, overlapping the dump.
    add(
      'page channel throughput (pages / dump time)',
      Unit.mbps,
      (r) => rate(r.record.stats.pages * 4096, r.record.stats.dumpMs) / 1e6,
      { baseline: { name: 'raw TCP', median: base.linkBps / 1e6 } },
    );
  }
  const cpuTarget: Target = { op: '<=', value: 0.5, of: 'median', text: '≤ 0.5' };
  add('source agent CPU per GB', Unit.cpuPerGb, (r) => r.src.cpuSelf / gb, { target: cpuTarget });
  add('destination agent CPU per GB', Unit.cpuPerGb, (r) => r.dst.cpuSelf / gb, {
    target: cpuTarget,
  });
  // CRIU's own processes (swrk dumps and restores, the page server, the lazy-pages daemon) are
  // children the agent reaps; CRIU's code that runs inside the job (the parasite copying pages
  // out on the source, the restorer filling them in on the destination) is counted with the
  // job, so only the host's cgroup holds all of it.
  for (const side of ['src', 'dst'] as const) {
    const who = side === 'src' ? 'source' : 'destination';
    add(
      `${who} CRIU CPU per GB (its processes: agent children)`,
      Unit.cpuPerGb,
      (r) => r[side].cpuChildren / gb,
    );
    add(
      `${who} host CPU per GB (its cgroup: agent, CRIU, job)`,
      Unit.cpuPerGb,
      (r) => r[side].cpuCgroup / gb,
    );
  }
  add(
    'destination rest per GB (host − agent − CRIU processes: CRIU restorer in the job, the job)',
    Unit.cpuPerGb,
    (r) => (r.dst.cpuCgroup - r.dst.cpuSelf - r.dst.cpuChildren) / gb,
  );
  const memTarget: Target = { op: '<=', value: 64, of: 'median', text: '≤ 64 MiB' };
  add('source agent peak memory growth', Unit.mib, (r) => r.src.peakGrowthBytes / MiB, {
    target: memTarget,
  });
  add('destination agent peak memory growth', Unit.mib, (r) => r.dst.peakGrowthBytes / MiB, {
    target: memTarget,
  });
  return out;
}

/** The `n`th bench job's own address on the testbed's job segment. */
function jobAddress(
  tb: Testbed,
  n: number,
): { address: string; prefixLength: number; gateway: string } {
  const [base] = tb.jobNetwork.subnet.split('/');
  const prefix = base!.split('.').slice(0, 3).join('.');
  return { address: `${prefix}.${200 + n}`, prefixLength: 24, gateway: tb.jobNetwork.gateway };
}

/** The destination's record of a migration (its own timeline), if it kept one. */
function readDestinationRecord(to: AgentHandle, rec: MigrationRecord): MigrationRecord | null {
  try {
    const path = to.srvPath(`${AGENT_STATE_DIR}/migrations/${rec.migrationId}.destination.json`);
    return JSON.parse(readFileSync(path, 'utf8')) as MigrationRecord;
  } catch {
    return null;
  }
}

/**
 * Where a run's frozen window went, step by step: the source's timeline from the freeze, then
 * the destination's from the stream's arrival (each agent's own clock; docs/MIGRATION.md).
 */
export function frozenWindow(src: MigrationRecord, dst: MigrationRecord | null): string {
  const steps = (r: MigrationRecord, from: string): string => {
    const i = r.timeline.findIndex((t) => t.phase === from);
    if (i < 0) return '';
    const at = r.timeline.slice(i);
    return at
      .slice(1)
      .map((t, k) => `${t.phase} +${t.atMs - at[k]!.atMs}`)
      .join(', ');
  };
  const first = src.timeline.find((t) => t.phase === 'quiesced') ? 'quiesced' : 'prepared';
  const dest = dst ? steps(dst, 'receiving') : '';
  return `source: ${steps(src, first)}${dest ? ` | destination: ${dest}` : ''}`;
}
