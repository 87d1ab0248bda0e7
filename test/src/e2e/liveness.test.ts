/**
 * Liveness under load: CPU hogs on every core, a large image fetched, and every agent's main
 * thread kept busy for longer than the controller's unreachable timeout inside each long
 * operation (the `busy-main` fault: heavy synchronous work). A restore, a drain and a cluster
 * checkpoint run at once and none rolls back, because heartbeats and liveness probes come from
 * the agents' heartbeat threads. A really dead agent is still found within the documented bound
 * (unreachable timeout + 1 s sweep + the probe's timeout), and its checkpoint rolls back.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { ClusterFixture } from '../cluster/fixture.js';
import { cliJobs } from './cli-jobs.js';
import { waitForValue } from './helpers.js';

/** As `drover up` runs: heartbeats every second, a host silent 5 s is unreachable. */
const HEARTBEAT_MS = 1000;
const UNREACHABLE_MS = 5000;
/** Longer than UNREACHABLE_MS: an agent this busy sends nothing from its main thread. */
const BUSY_MS = 7000;
/** The controller's probe timeout (controller/src/liveness.ts) and its sweep. */
const PROBE_MS = 3000;
const SWEEP_MS = 1000;

let f: ClusterFixture;
const hogs: ChildProcess[] = [];

before(async () => {
  f = await ClusterFixture.start({
    hosts: 3,
    agents: { heartbeatMs: HEARTBEAT_MS },
    controller: { id: 'ctl-liveness', unreachableMs: UNREACHABLE_MS },
  });
});

after(async () => {
  stopHogs();
  await f?.stop();
});

const drover = (args: readonly string[]): ReturnType<ClusterFixture['drover']> => f.drover(args);

/** A CPU hog on every core (busy shells), stopped by PID. */
function startHogs(): void {
  for (let i = 0; i < availableParallelism(); i++) {
    const c = spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' });
    c.on('error', () => {});
    hogs.push(c);
  }
}

function stopHogs(): void {
  for (const c of hogs.splice(0)) if (c.pid && c.exitCode === null) process.kill(c.pid, 'SIGKILL');
}

interface Op {
  opId: string;
  kind: string;
  state: string;
  phase?: string;
  error: { message: string } | null;
  items?: { jobId: string; state: string; destination: string | null; reason: string | null }[];
  members?: { jobId: string; state: string }[];
}

/** The workload helpers (cli-jobs.ts) with the suite's CLI, run directory and agents. */
const { json, start, verify } = cliJobs(() => f);

describe('liveness that heavy work cannot starve', () => {
  test('under CPU hogs and busy agent threads, a restore of a large image, a drain and a cluster checkpoint all finish; none rolls back', async () => {
    for (const h of ['h1', 'h2', 'h3']) {
      await f.agent(h).restartWith({ DROVER_FAULT: `busy-main=${BUSY_MS}` });
    }
    // A large image to fetch: a 192 MiB job checkpointed (stopped) into a set.
    const big = await start('h1', 'memory', 'live-big', 192);
    const stored = await drover(['--json', 'checkpoint', big.id, '--name', 'live-big']);
    assert.equal(stored.code, 0, stored.stderr + stored.stdout);
    assert.equal((JSON.parse(stored.stdout) as Op).state, 'done', stored.stdout);
    const moving = await start('h2', 'python', 'live-drain');
    const cut = await start('h3', 'node', 'live-cut');
    startHogs();
    try {
      const [restore, drain, checkpoint, rm] = await Promise.all([
        drover(['--json', 'restore', 'live-big', '--to', 'h1']),
        drover(['--json', '--no-progress', 'drain', 'h2']),
        drover(['--json', 'checkpoint', cut.id, '--name', 'live-cut', '--leave-running']),
        // While h3's agent is busy with its dump (its main thread answers nothing for 7 s), it
        // is not gone: removing it is refused (its heartbeat thread answers the probe).
        (async () => {
          await waitForValue(async () => {
            const { ops } = await json<{ ops: Op[] }>(['ops']);
            return ops.find(
              (o) => o.kind === 'checkpoint' && o.state === 'running' && o.phase === 'dumping',
            );
          }, 120_000);
          return drover(['hosts', 'rm', 'h3']);
        })(),
      ]);
      assert.equal(rm.code, 4, `hosts rm of a busy host: ${rm.stderr}${rm.stdout}`);
      assert.match(rm.stderr, /host h3 still runs its agent/);
      for (const [what, r] of [
        ['restore', restore],
        ['drain', drain],
        ['checkpoint', checkpoint],
      ] as const) {
        assert.equal(r.code, 0, `${what} exited ${r.code}: ${r.stderr}${r.stdout}`);
        const op = JSON.parse(r.stdout) as Op;
        assert.equal(op.state, 'done', `${what}: ${r.stdout}`);
        assert.doesNotMatch(r.stdout, /stopped answering|rolled back|rolled-back/);
      }
      const drained = JSON.parse(drain.stdout) as Op;
      assert.deepEqual(
        drained.items!.map((i) => [i.jobId, i.state]),
        [[moving.id, 'done']],
      );
    } finally {
      stopHogs();
    }
    assert.equal(await verify(big), 'h1');
    assert.notEqual(await verify(moving), 'h2');
    assert.equal(await verify(cut), 'h3');
    for (const j of [big, moving, cut]) await drover(['signal', j.id, 'SIGKILL']);
    await drover(['uncordon', 'h2']);
    for (const s of ['live-big', 'live-cut']) await drover(['images', 'rm', s]);
    for (const h of ['h1', 'h2', 'h3']) await f.agent(h).restartWith({});
  });

  test('a really dead agent is found within the documented bound; its checkpoint rolls back once it is back', async () => {
    // Uploads at 4 MB/s: the storing phase lasts long enough to kill the agent in it.
    await f.agent('h2').restartWith({ DROVER_FAULT: 'throttle=4000000' });
    const j = await start('h2', 'memory', 'live-dead', 64);
    startHogs();
    try {
      const running = drover(['--json', 'checkpoint', j.id, '--name', 'live-dead']);
      const op = await waitForValue(async () => {
        const { ops } = await json<{ ops: Op[] }>(['ops']);
        return ops.find((o) => o.kind === 'checkpoint' && o.phase === 'storing');
      }, 120_000);
      await f.agent('h2').kill();
      const killedAt = Date.now();
      const failing = await waitForValue(async () => {
        const o = await json<Op>(['status', op.opId]);
        return o.phase === 'rolling-back' || o.state !== 'running' ? o : undefined;
      }, 60_000);
      const tookMs = Date.now() - killedAt;
      const bound = UNREACHABLE_MS + SWEEP_MS + PROBE_MS;
      // Found by the liveness probe, or sooner by the call itself (nobody serves h2 any more).
      assert.match(
        failing.error?.message ?? '',
        /the agent on h2 stopped answering \(no heartbeat, no answer to a liveness probe\)|the server of drover\.agent\.h2\.image-(push|move) went away/,
      );
      // The bound, plus the CLI's polling and a loaded machine's scheduling.
      assert.ok(
        tookMs <= bound + 5000,
        `a dead agent took ${tookMs} ms to be found (bound ${bound})`,
      );
      stopHogs();
      await f.agent('h2').restartWith({});
      const r = await running;
      assert.equal(r.code, 1, r.stderr + r.stdout);
      assert.match(r.stdout, /every job was thawed where it was/);
    } finally {
      stopHogs();
      await f.agent('h2').restartWith({});
    }
    assert.equal(await verify(j), 'h2');
    await drover(['signal', j.id, 'SIGKILL']);
  });
});
