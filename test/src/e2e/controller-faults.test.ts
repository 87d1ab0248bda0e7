/**
 * The controller's fault findings, end to end on a secure testbed (TLS, every identity held to
 * its role, as `drover up` runs): a NATS restart while a cluster checkpoint stores its images, a
 * controller killed in the middle of a migration, and a controller that has just started.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ControllerProcess, type ControllerOptions } from '@drover/testbed';
import { ClusterFixture } from '../cluster/fixture.js';
import { cliJobs } from './cli-jobs.js';
import { sleep, waitFor, waitForValue } from './helpers.js';

let f: ClusterFixture;
let ctlN = 0;

/** Heartbeats every 2 s: a fresh controller has a while to wait for them. */
const HEARTBEAT_MS = 2000;
const UNREACHABLE_MS = 6000;

/** The next controller's options: a new lease holder id each time. */
function nextController(): ControllerOptions {
  return { id: `ctl-faults-${++ctlN}`, unreachableMs: UNREACHABLE_MS };
}

function startController(): Promise<ControllerProcess> {
  return ControllerProcess.start(f.tb, nextController());
}

before(async () => {
  f = await ClusterFixture.start({
    hosts: 3,
    secure: true,
    agents: { heartbeatMs: HEARTBEAT_MS },
    controller: nextController(),
    hostsTimeoutMs: 30_000,
  });
});

after(async () => {
  await f?.stop();
});

/** `drover` as the operator. */
const drover = (args: string[], timeoutMs?: number): ReturnType<ClusterFixture['drover']> =>
  f.drover(args, timeoutMs);

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
const { json, start, verify } = cliJobs(() => f);

describe('controller fault findings', () => {
  test('NATS restarts while a cluster checkpoint stores its images: the checkpoint completes and restores', async () => {
    // Uploads at 8 MB/s: storing 64 MiB lasts long enough to restart NATS in it.
    await f.agent('h1').restartWith({ DROVER_FAULT: 'throttle=8000000' });
    const jobs = [await start('h1', 'memory', 'nr', 64), await start('h2', 'python', 'nr')];
    try {
      const running = drover(['--json', 'checkpoint', '--all', '--name', 'nats-restart']);
      await waitForValue(async () => {
        const { ops } = await json<{ ops: Op[] }>(['ops']);
        return ops.find((o) => o.kind === 'checkpoint' && o.phase === 'storing');
      }, 120_000);
      await sleep(1500);
      const server = f.tb.nats!.servers[0]!;
      await server.kill();
      await sleep(1000);
      await server.restart();
      const r = await running;
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const op = JSON.parse(r.stdout) as Op;
      assert.equal(op.state, 'done', r.stdout);
      await f.agent('h1').restartWith({});
      const restored = await drover(['restore', 'nats-restart']);
      assert.equal(restored.code, 0, restored.stderr + restored.stdout);
      for (const j of jobs) await verify(j);
    } finally {
      await f.agent('h1').restartWith({});
      for (const j of jobs) await drover(['signal', j.id, 'SIGKILL']);
      await drover(['images', 'rm', 'nats-restart']);
    }
  });

  test('the controller is killed in the middle of a migration: the standby records its outcome and drover migrate reports it', async () => {
    await f.agent('h1').restartWith({ DROVER_FAULT: 'throttle=8000000' });
    const j = await start('h1', 'memory', 'mk', 64);
    try {
      const running = drover(['--json', '--timeout', '120', 'migrate', j.id, '--to', 'h2']);
      await waitFor(async () => {
        const { jobs } = await json<{ jobs: { id: string; state: string }[] }>(['jobs']);
        return jobs.some((x) => x.id === j.id && x.state === 'migrating');
      }, 60_000);
      const standby = startController();
      await sleep(500);
      await f.controller.kill();
      f.controller = await standby;
      const r = await running;
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const op = JSON.parse(r.stdout) as Op;
      assert.equal(op.kind, 'migrate');
      assert.equal(op.state, 'done', r.stdout);
      assert.equal(op.migration?.destination, 'h2');
      assert.equal(op.migration?.state, 'done');
      const status = await json<Op>(['status', op.opId]);
      assert.equal(status.state, 'done');
      await f.agent('h1').restartWith({});
      assert.equal(await verify(j), 'h2');
    } finally {
      await f.agent('h1').restartWith({});
      await drover(['signal', j.id, 'SIGKILL']);
    }
  });

  test('a controller that has just started answers for what exists, never "not found"', async () => {
    const j = await start('h3', 'python', 'fresh');
    try {
      await f.controller.kill();
      f.controller = await startController();
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
