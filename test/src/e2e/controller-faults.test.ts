/**
 * The controller's fault findings, end to end on a secure testbed (TLS, every identity held to
 * its role, as `drover up` runs): a NATS restart while a cluster checkpoint stores its images, a
 * controller killed in the middle of a migration, and a controller that has just started.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentCluster, ControllerProcess, Testbed } from '@drover/testbed';
import { droverAs, type CliResult } from '../cluster/cli.js';
import { cliJobs } from './cli-jobs.js';
import { sleep, waitFor, waitForValue } from './helpers.js';

let tb: Testbed;
let cluster: AgentCluster;
let ctl: ControllerProcess;
let urls: string[];
let ctlN = 0;

/** Heartbeats every 2 s: a fresh controller has a while to wait for them. */
const HEARTBEAT_MS = 2000;
const UNREACHABLE_MS = 6000;

function startController(): Promise<ControllerProcess> {
  return ControllerProcess.start(tb, { id: `ctl-faults-${++ctlN}`, unreachableMs: UNREACHABLE_MS });
}

before(async () => {
  tb = await Testbed.create({ hosts: 3, nats: 'single', secure: true });
  urls = [...tb.nats!.urls];
  cluster = await AgentCluster.start(tb, { heartbeatMs: HEARTBEAT_MS });
  ctl = await startController();
  await waitFor(async () => {
    const r = await drover(['hosts', '--json']);
    return r.code === 0 && (JSON.parse(r.stdout) as { hosts: unknown[] }).hosts.length === 3;
  }, 30_000);
});

after(async () => {
  await ctl?.kill();
  await cluster?.close();
  await tb?.teardown();
});

function drover(args: string[], timeoutMs = 300_000): Promise<CliResult> {
  return droverAs(urls, tb.certs!.operator, args, timeoutMs);
}

interface Op {
  opId: string;
  kind: string;
  state: string;
  phase?: string;
  request: Record<string, unknown>;
  error: { message: string } | null;
  migration: { source: string; destination: string; state: string } | null;
}

/** The workload helpers (cli-jobs.ts) with the suite's CLI, run directory and agents. */
const { json, start, verify } = cliJobs(() => ({
  drover: (args) => drover(args),
  runDir: tb.runDir,
  agent: (h) => cluster.agent(h),
}));

describe('controller fault findings', () => {
  test('NATS restarts while a cluster checkpoint stores its images: the checkpoint completes and restores', async () => {
    // Uploads at 8 MB/s: storing 64 MiB lasts long enough to restart NATS in it.
    await cluster.agent('h1').restartWith({ DROVER_FAULT: 'throttle=8000000' });
    const jobs = [await start('h1', 'memory', 'nr', 64), await start('h2', 'python', 'nr')];
    try {
      const running = drover(['--json', 'checkpoint', '--all', '--name', 'nats-restart']);
      await waitForValue(async () => {
        const { ops } = await json<{ ops: Op[] }>(['ops']);
        return ops.find((o) => o.kind === 'checkpoint' && o.phase === 'storing');
      }, 120_000);
      await sleep(1500);
      const server = tb.nats!.servers[0]!;
      await server.kill();
      await sleep(1000);
      await server.restart();
      const r = await running;
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const op = JSON.parse(r.stdout) as Op;
      assert.equal(op.state, 'done', r.stdout);
      await cluster.agent('h1').restartWith({});
      const restored = await drover(['restore', 'nats-restart']);
      assert.equal(restored.code, 0, restored.stderr + restored.stdout);
      for (const j of jobs) await verify(j);
    } finally {
      await cluster.agent('h1').restartWith({});
      for (const j of jobs) await drover(['signal', j.id, 'SIGKILL']);
      await drover(['images', 'rm', 'nats-restart']);
    }
  });

  test('the controller is killed in the middle of a migration: the standby records its outcome and drover migrate reports it', async () => {
    await cluster.agent('h1').restartWith({ DROVER_FAULT: 'throttle=8000000' });
    const j = await start('h1', 'memory', 'mk', 64);
    try {
      const running = drover(['--json', '--timeout', '120', 'migrate', j.id, '--to', 'h2']);
      await waitFor(async () => {
        const { jobs } = await json<{ jobs: { id: string; state: string }[] }>(['jobs']);
        return jobs.some((x) => x.id === j.id && x.state === 'migrating');
      }, 60_000);
      const standby = startController();
      await sleep(500);
      await ctl.kill();
      ctl = await standby;
      const r = await running;
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const op = JSON.parse(r.stdout) as Op;
      assert.equal(op.kind, 'migrate');
      assert.equal(op.state, 'done', r.stdout);
      assert.equal(op.migration?.destination, 'h2');
      assert.equal(op.migration?.state, 'done');
      const status = await json<Op>(['status', op.opId]);
      assert.equal(status.state, 'done');
      await cluster.agent('h1').restartWith({});
      assert.equal(await verify(j), 'h2');
    } finally {
      await cluster.agent('h1').restartWith({});
      await drover(['signal', j.id, 'SIGKILL']);
    }
  });

  test('a controller that has just started answers for what exists, never "not found"', async () => {
    const j = await start('h3', 'python', 'fresh');
    try {
      await ctl.kill();
      ctl = await startController();
      // At once, before its first heartbeats could have arrived.
      const [hosts, inspect, jobs, preflight] = await Promise.all([
        drover(['--json', 'hosts']),
        drover(['--json', 'inspect', j.id]),
        drover(['--json', 'jobs']),
        drover(['--json', 'preflight', j.id, '--to', 'h2']),
      ]);
      for (const r of [hosts, inspect, jobs, preflight]) {
        assert.equal(r.code, 0, r.stderr + r.stdout);
      }
      assert.equal((JSON.parse(hosts.stdout) as { hosts: unknown[] }).hosts.length, 3);
      assert.equal((JSON.parse(inspect.stdout) as { host: string }).host, 'h3');
      const listed = (JSON.parse(jobs.stdout) as { jobs: { id: string }[] }).jobs;
      assert.ok(
        listed.some((x) => x.id === j.id),
        jobs.stdout,
      );
    } finally {
      await drover(['signal', j.id, 'SIGKILL']);
    }
  });
});
