/**
 * The controller at scale: a real drover-controller and one NATS server against a fleet of
 * simulated agents (1,000 hosts, 10,000 jobs by default). Measures what heartbeats cost the
 * controller, how long planning a drain of a 100-job host takes, and `drover jobs` latency.
 */
import { readFileSync } from 'node:fs';
import { Bus, callAllPages, ControllerClient } from '@drover/bus';
import { planMany, type HostView } from '@drover/controller';
import { toDroverError } from '@drover/common';
import { ControllerProcess, Testbed } from '@drover/testbed';
import { drover } from '../cluster/cli.js';
import { cpuTimes, memoryUse } from './proc-stat.js';
import { Unit, type Figure } from './report.js';
import { SimFleet } from './sim-agent.js';
import { summarize } from './stats.js';
import type { BenchLog } from './bench-log.js';

/** Options of the scale benchmark. */
export interface ScaleOptions {
  hosts: number;
  jobs: number;
  /** Jobs on each host that is drained (one such host per repetition). */
  drainJobs: number;
  heartbeatMs: number;
  reps: number;
  /** Length of one heartbeat-cost window. */
  windowMs: number;
  log: BenchLog;
}

const SECTION = 'controller at scale';

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The CPU flags of this machine (simulated hosts report them, as real ones would). */
function localCpuFlags(): string[] {
  const text = readFileSync('/proc/cpuinfo', 'utf8');
  return (/^flags\s*:\s*(.*)$/m.exec(text)?.[1] ?? '').split(/\s+/).filter(Boolean);
}

/** Host names `sim-0000`...: sorted by name, the drained hosts come first. */
function hostNames(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `sim-${String(i).padStart(4, '0')}`);
}

/** Jobs per host: `drained` hosts with `drainJobs` each, the rest of `total` spread evenly. */
export function jobLayout(
  total: number,
  hosts: number,
  drained: number,
  drainJobs: number,
): number[] {
  const heavy = Array.from({ length: Math.min(drained, hosts) }, () => drainJobs);
  let left = Math.max(0, total - heavy.reduce((a, b) => a + b, 0));
  const rest: number[] = [];
  for (let i = heavy.length; i < hosts; i++) {
    const n = Math.ceil(left / (hosts - i));
    rest.push(n);
    left -= n;
  }
  return [...heavy, ...rest];
}

/** Wait until `ctl` has logged every host joining. */
async function waitHosts(ctl: ControllerProcess, hosts: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  while ((ctl.output().match(/host joined/g) ?? []).length < hosts) {
    if (Date.now() > deadline) throw new Error('the controller did not see every simulated host');
    await sleep(200);
  }
}

/** Run the scale benchmark; returns its figures. */
export async function benchScale(o: ScaleOptions): Promise<Figure[]> {
  const figures: Figure[] = [];
  const fig = (f: Omit<Figure, 'section'>): void => void figures.push({ section: SECTION, ...f });
  const tb = await Testbed.create({ hosts: 1, nats: 'single' });
  let fleet: SimFleet | null = null;
  let ctl: ControllerProcess | null = null;
  let bus: Bus | null = null;
  try {
    const urls = [...tb.nats!.urls];
    const natsPid = tb.nats!.servers[0]!.pid()!;
    ctl = await ControllerProcess.start(tb, {
      id: 'ctl-bench',
      // Windows without heartbeats (the idle baseline) must not make hosts unreachable.
      unreachableMs: 120_000,
      logLevel: 'info',
    });
    const hosts = hostNames(o.hosts);
    const layout = jobLayout(o.jobs, o.hosts, o.reps, o.drainJobs);
    o.log(
      `scale: ${o.hosts} simulated agents, ${o.jobs} jobs, heartbeat every ${o.heartbeatMs} ms`,
    );
    fleet = await SimFleet.start({
      servers: urls,
      hosts,
      jobsPerHost: layout,
      connections: 4,
      heartbeatMs: o.heartbeatMs,
      cpuFlags: localCpuFlags(),
    });
    fleet.startHeartbeats();
    bus = await Bus.connect({ servers: urls, name: 'bench-cli', requestTimeoutMs: 120_000 });
    const client = new ControllerClient(bus);
    await waitHosts(ctl, o.hosts);
    await sleep(o.heartbeatMs);

    // 1. Heartbeats: controller CPU while every host beats, against a window without heartbeats.
    const window = async (): Promise<{
      ctlCpu: number;
      natsCpu: number;
      beats: number;
      ms: number;
    }> => {
      const c0 = cpuTimes(ctl!.pid)!.self;
      const n0 = cpuTimes(natsPid)!.self;
      const b0 = fleet!.counters.heartbeats;
      const t0 = performance.now();
      await sleep(o.windowMs);
      return {
        ctlCpu: cpuTimes(ctl!.pid)!.self - c0,
        natsCpu: cpuTimes(natsPid)!.self - n0,
        beats: fleet!.counters.heartbeats - b0,
        ms: performance.now() - t0,
      };
    };
    const busy: Awaited<ReturnType<typeof window>>[] = [];
    const idle: Awaited<ReturnType<typeof window>>[] = [];
    for (let i = 0; i < o.reps; i++) {
      busy.push(await window());
      fleet.stopHeartbeats();
      await sleep(200);
      idle.push(await window());
      fleet.startHeartbeats();
      await sleep(o.heartbeatMs);
    }
    const idleCpuPerMs = summarize(idle.map((w) => w.ctlCpu / w.ms)).median;
    const perSec = (o.hosts * 1000) / o.heartbeatMs;
    fig({
      name: `controller CPU at ${Math.round(perSec)} heartbeats/s`,
      unit: Unit.cpuPct,
      summary: summarize(busy.map((w) => (w.ctlCpu / (w.ms / 1000)) * 100)),
      note: `${o.hosts} hosts every ${o.heartbeatMs} ms, ${Math.round(o.jobs / o.hosts)} jobs each in every heartbeat`,
    });
    fig({
      name: 'controller CPU per heartbeat (net of idle)',
      unit: Unit.us,
      summary: summarize(busy.map((w) => ((w.ctlCpu - idleCpuPerMs * w.ms) / w.beats) * 1e6)),
    });
    fig({
      name: 'NATS server CPU per heartbeat',
      unit: Unit.us,
      summary: summarize(busy.map((w) => (w.natsCpu / w.beats) * 1e6)),
      note: 'with the simulated agents, CLI and controller all on this machine',
    });
    fig({
      name: 'controller resident memory',
      unit: Unit.mib,
      summary: summarize([(memoryUse(ctl.pid)?.rssBytes ?? NaN) / 2 ** 20]),
    });

    // 2. Planning a drain in-process: placement alone over every host's heartbeat.
    const views: HostView[] = [...fleet.agents.values()].map((a) => ({
      host: a.host,
      info: a.info(),
      cordoned: false,
      reachable: true,
      lastSeenMs: Date.now(),
    }));
    const planMs: number[] = [];
    for (let i = 0; i < Math.max(5, o.reps); i++) {
      const source = fleet.agent(hosts[i % o.reps]!)!;
      const t0 = performance.now();
      planMany(
        views,
        [...source.jobs.values()].map((j) => ({
          jobId: j.id,
          req: { memoryBytes: source.memory.get(j.id) ?? 0, cpuFlags: [], exclude: [source.host] },
        })),
      );
      planMs.push(performance.now() - t0);
    }
    fig({
      name: `placement of ${o.drainJobs} jobs over ${o.hosts} hosts (planMany, in-process)`,
      unit: Unit.ms,
      summary: summarize(planMs),
      target: { op: '<=', value: 100, of: 'median', text: '≤ 100 ms' },
    });

    // 3. `drover jobs`: the controller asks every agent, a page at a time; from a connected
    //    client (every page), then the CLI.
    const jobsMs: number[] = [];
    let jobsError: string | null = null;
    let jobsCount = 0;
    for (let i = 0; i < o.reps; i++) {
      const t0 = performance.now();
      try {
        jobsCount = (await callAllPages(client, 'jobs', {})).jobs.length;
        jobsMs.push(performance.now() - t0);
      } catch (err) {
        jobsError = toDroverError(err).message;
        o.log(`scale: jobs failed: ${jobsError}`);
        break;
      }
    }
    await sleep(500);
    const ctlDied = !ctl.running();
    fig({
      name: `jobs request, all ${o.jobs} jobs, every page (connected client)`,
      unit: Unit.ms,
      summary: summarize(jobsMs),
      note: jobsError
        ? `FAILED: ${jobsError}${ctlDied ? ' (the controller process died)' : ''}`
        : `${jobsCount} jobs listed`,
    });
    if (ctlDied) {
      o.log(`scale: the controller died: ${ctl.output().slice(-600)}`);
      ctl = await ControllerProcess.start(tb, {
        id: 'ctl-bench-2',
        unreachableMs: 120_000,
        logLevel: 'info',
      });
      await waitHosts(ctl, o.hosts);
    }
    const cliMs: number[] = [];
    let cliError: string | null = null;
    let cliCount = 0;
    for (let i = 0; i < o.reps && jobsError === null; i++) {
      const t0 = performance.now();
      const r = await drover(urls, ['--json', 'jobs'], 120_000);
      if (r.code !== 0) {
        cliError = `exit ${r.code}: ${r.stderr.trim().slice(0, 200)}`;
        break;
      }
      cliMs.push(performance.now() - t0);
      cliCount = (JSON.parse(r.stdout) as { jobs: unknown[] }).jobs.length;
    }
    if (jobsError === null) {
      fig({
        name: '`drover jobs --json` (CLI process, wall)',
        unit: Unit.ms,
        summary: summarize(cliMs),
        note: cliError ? `FAILED: ${cliError}` : `${cliCount} jobs listed`,
      });
    }
    const cliHostsMs: number[] = [];
    let cliHostsNote = '';
    for (let i = 0; i < o.reps; i++) {
      const t0 = performance.now();
      const r = await drover(urls, ['--json', 'hosts'], 120_000);
      if (r.code !== 0) {
        cliHostsNote = `FAILED: exit ${r.code}: ${r.stderr.trim().slice(0, 200)}`;
        break;
      }
      cliHostsMs.push(performance.now() - t0);
      cliHostsNote = `${(JSON.parse(r.stdout) as { hosts: unknown[] }).hosts.length} hosts listed`;
    }
    fig({
      name: '`drover hosts --json` (CLI process, wall)',
      unit: Unit.ms,
      summary: summarize(cliHostsMs),
      note: cliHostsNote,
    });
    // `drover hosts`: every host's last heartbeat in one reply.
    const hostsMs: number[] = [];
    let hostsNote = '';
    for (let i = 0; i < o.reps; i++) {
      const t0 = performance.now();
      try {
        hostsNote = `${(await callAllPages(client, 'hosts', {})).hosts.length} hosts listed`;
        hostsMs.push(performance.now() - t0);
      } catch (err) {
        hostsNote = `FAILED: ${toDroverError(err).message}`;
        break;
      }
    }
    fig({
      name: `hosts request, all ${o.hosts} hosts, every page (connected client)`,
      unit: Unit.ms,
      summary: summarize(hostsMs),
      note: hostsNote,
    });
    const oneHost: number[] = [];
    for (let i = 0; i < Math.max(5, o.reps); i++) {
      const t0 = performance.now();
      await client.call('jobs', { host: hosts[o.hosts - 1]! }, 60_000);
      oneHost.push(performance.now() - t0);
    }
    fig({
      name: '`jobs --host H` (one host, connected client)',
      unit: Unit.ms,
      summary: summarize(oneHost),
    });

    // 4. Drain of a 100-job host through the controller: time to plan (drain asked → first
    //    migrate reaches the source) and the whole drain (migrations are instant here).
    const planned: number[] = [];
    const drained: number[] = [];
    let drainNote = '';
    for (let i = 0; i < o.reps; i++) {
      fleet.counters.firstMigrateAtMs = null;
      const t0 = performance.now();
      const op = await client.call('drain', { host: hosts[i]!, parallel: 4 }, 600_000);
      drained.push(performance.now() - t0);
      if (fleet.counters.firstMigrateAtMs !== null)
        planned.push(fleet.counters.firstMigrateAtMs - t0);
      const moved = op.items?.filter((it) => it.state === 'done').length ?? 0;
      drainNote = `${moved} of ${op.items?.length ?? 0} jobs moved (state ${op.state})`;
    }
    fig({
      name: `drain planning, ${o.drainJobs}-job host (drain asked → first migration starts)`,
      unit: Unit.ms,
      summary: summarize(planned),
      target: { op: '<=', value: 100, of: 'median', text: '≤ 100 ms' },
      note: 'cordon, list, inspect and preflight of every job, placement, the operation record',
    });
    fig({
      name: `whole drain of ${o.drainJobs} jobs with instant migrations (parallel 4)`,
      unit: Unit.ms,
      summary: summarize(drained),
      note: drainNote,
    });
    return figures;
  } finally {
    await bus?.close().catch(() => undefined);
    await fleet?.close().catch(() => undefined);
    await ctl?.kill().catch(() => undefined);
    await tb.teardown();
  }
}
