#!/usr/bin/env node
/**
 * The freeze-skew bench, by hand (not part of `npm run bench`): the cluster checkpoint's mix of
 * jobs on three testbed hosts, `drover checkpoint --all --leave-running` again and again, with
 * the agents' cut timer at the normal policy and at a real-time priority (the agents restarted
 * between, the jobs kept), each unloaded and under CPU hogs (busy `sh` loops this script starts
 * and kills by PID). Prints, per run and as medians, where a cut's skew comes from: the spread of
 * the freeze requests (the cut), of the frozen reports, how late each host's timer made its writes,
 * and how long its kernel took to report every job frozen. Asserts nothing.
 *
 * Usage: node test/dist/bench/skew-bench.js [--jobs 24] [--mb 16] [--reps 5] [--hogs 2] [--modes normal,realtime]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Bus, ControllerClient } from '@drover/bus';
import type { OperationRecord } from '@drover/protocol';
import { AgentCluster, ControllerProcess, Testbed } from '@drover/testbed';
import { drover } from '../cluster/cli.js';
import { waitReady, workloadCommand } from '../workloads/mod.js';
import { summarize } from './stats.js';

const MIX = ['memory', 'python', 'pipeline'] as const;
/** The agents' cut priority per mode (DROVER_CUT_PRIORITY). */
const MODES = { normal: '0', realtime: '10' } as const;
type Mode = keyof typeof MODES;

/** What one checkpoint's record says of its cut. */
interface CutFigures {
  mode: Mode;
  hogs: number;
  load1: number;
  attempts: number;
  /** First to last freeze requested, and frozen reported (hosts' clocks). */
  requestSkewMs: number;
  frozenSkewMs: number;
  /** The same on the controller's clock (host times less their estimated offsets). */
  ctlRequestSkewMs: number;
  ctlFrozenSkewMs: number;
  /** Largest, over hosts: its timer's writes after the instant; its last job seen frozen. */
  issuedLateMs: number;
  lateMs: number;
  /** Largest, over hosts: its own spread of requests, and of frozen reports. */
  hostRequestSkewMs: number;
  hostFrozenSkewMs: number;
  /** Spread of the hosts' estimated offsets (on one machine: the estimate's error). */
  offsetSpreadMs: number;
}

function figuresOf(op: OperationRecord, mode: Mode, hogs: number, load1: number): CutFigures {
  const f = op.freezes ?? [];
  const max = (xs: (number | undefined)[]): number => Math.max(...xs.map((x) => x ?? NaN));
  const offsets = f.map((h) => h.offsetMs ?? NaN);
  return {
    mode,
    hogs,
    load1,
    attempts: op.cut?.attempts ?? NaN,
    requestSkewMs: op.requestSkewMs ?? NaN,
    frozenSkewMs: op.freezeSkewMs ?? NaN,
    ctlRequestSkewMs: op.cut?.requestSkewMs ?? NaN,
    ctlFrozenSkewMs: op.cut?.skewMs ?? NaN,
    issuedLateMs: max(f.map((h) => h.issuedLateMs)),
    lateMs: max(f.map((h) => h.lateMs)),
    hostRequestSkewMs: max(f.map((h) => h.requestSkewMs)),
    hostFrozenSkewMs: max(f.map((h) => h.skewMs)),
    offsetSpreadMs: Math.max(...offsets) - Math.min(...offsets),
  };
}

/** `n` busy loops (one per CPU they take), killed by their PIDs. */
function startHogs(n: number): ChildProcess[] {
  return Array.from({ length: n }, () =>
    spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' }),
  );
}

function stopHogs(hogs: ChildProcess[]): void {
  for (const h of hogs) if (h.pid !== undefined) process.kill(h.pid, 'SIGKILL');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      jobs: { type: 'string', default: '24' },
      /** Memory of each memory job (MiB): the checkpoint section's 16, less for quicker runs. */
      mb: { type: 'string', default: '16' },
      reps: { type: 'string', default: '5' },
      hogs: { type: 'string', default: '2' },
      modes: { type: 'string', default: 'normal,realtime' },
    },
  });
  const jobsN = Number(values.jobs);
  const mb = Number(values.mb);
  const reps = Number(values.reps);
  const hogsN = Number(values.hogs);
  const modes = values.modes.split(',') as Mode[];
  const tb = await Testbed.create({ hosts: 3, nats: 'single' });
  let cluster: AgentCluster | null = null;
  let ctl: ControllerProcess | null = null;
  let bus: Bus | null = null;
  let hogs: ChildProcess[] = [];
  const runs: CutFigures[] = [];
  // Ctrl-C: finish the checkpoint under way, then tear the testbed down and report.
  let stopping = false;
  process.once('SIGINT', () => (stopping = true));
  try {
    const urls = [...tb.nats!.urls];
    cluster = await AgentCluster.start(tb, { logLevel: 'info', heartbeatMs: 2000 });
    ctl = await ControllerProcess.start(tb, { id: 'ctl-bench-skew', logLevel: 'info' });
    bus = await Bus.connect({ servers: urls, name: 'bench-skew', requestTimeoutMs: 600_000 });
    const client = new ControllerClient(bus);
    const hosts = async (): Promise<number> => (await client.call('hosts', {})).hosts.length;
    for (let i = 0; (await hosts()) < 3; i++) {
      if (i > 200) throw new Error('the controller does not see every host');
      await new Promise((r) => setTimeout(r, 100));
    }
    for (let i = 0; i < jobsN; i++) {
      const host = tb.hosts[i % 3]!.name;
      const dir = join(tb.runDir, 'shared', `skew-${i}`);
      mkdirSync(dir, { recursive: true });
      const kind = MIX[Math.floor(i / 3) % MIX.length]!;
      await cluster.agent(host).client.call('run', {
        command: workloadCommand(kind, kind === 'memory' ? { dir, mb } : { dir }),
        env: { UV_USE_IO_URING: '0' },
        name: `skew-${i}`,
      });
      await waitReady(dir, 120_000);
    }
    let n = 0;
    for (const mode of modes) {
      for (const a of cluster.agents) await a.restartWith({ DROVER_CUT_PRIORITY: MODES[mode] });
      for (const load of [0, hogsN]) {
        hogs = startHogs(load);
        await new Promise((r) => setTimeout(r, 2000));
        for (let r = 0; r < reps && !stopping; r++) {
          const name = `skew-${n++}`;
          const res = await drover(
            urls,
            ['--json', 'checkpoint', '--all', '--name', name, '--leave-running'],
            600_000,
          );
          if (res.code !== 0) throw new Error(`checkpoint exited ${res.code}: ${res.stderr}`);
          const fig = figuresOf(
            JSON.parse(res.stdout) as OperationRecord,
            mode,
            load,
            Math.round(loadavg()[0]! * 10) / 10,
          );
          runs.push(fig);
          console.log(JSON.stringify(fig));
          await client.call('images-delete', { name });
        }
        stopHogs(hogs);
        hogs = [];
      }
    }
  } finally {
    stopHogs(hogs);
    await bus?.close().catch(() => undefined);
    await ctl?.kill().catch(() => undefined);
    await cluster?.close().catch(() => undefined);
    await tb.teardown();
  }
  const keys = [
    'requestSkewMs',
    'frozenSkewMs',
    'ctlRequestSkewMs',
    'ctlFrozenSkewMs',
    'issuedLateMs',
    'lateMs',
    'hostRequestSkewMs',
    'hostFrozenSkewMs',
    'offsetSpreadMs',
    'load1',
    'attempts',
  ] as const;
  console.log(`\nmedian (min–max) of ${reps} run(s) each, ${new Date().toISOString()}`);
  for (const mode of modes) {
    for (const load of [0, hogsN]) {
      const rs = runs.filter((r) => r.mode === mode && r.hogs === load);
      if (rs.length === 0) continue;
      console.log(`${mode}, ${load} hog(s):`);
      for (const k of keys) {
        const s = summarize(rs.map((r) => r[k]));
        console.log(
          `  ${k.padEnd(18)} ${s.median.toFixed(2)} (${s.min.toFixed(2)}–${s.max.toFixed(2)})`,
        );
      }
    }
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
