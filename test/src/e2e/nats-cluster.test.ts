/**
 * Drover on a 3-node NATS cluster: a NATS server crashes in the middle of a drain — the one the
 * controller is connected to, which also leads the stream of the operations bucket — and
 * nothing is lost: the drain finishes, every job moved and verifies itself, and operations,
 * cordons, the lease and the event history are intact.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { StateStore, type LeaseRecord } from '@drover/bus';
import type { NatsServer } from '@drover/testbed';
import { ClusterFixture } from '../cluster/fixture.js';
import { requestVerdict, waitReady } from '../workloads/mod.js';
import { cliJobs } from './cli-jobs.js';
import { signaller, sleep, waitFor, waitForValue } from './helpers.js';

const CONTROLLER_ID = 'ctl-r3';

let f: ClusterFixture;
let passed = false;

before(async () => {
  f = await ClusterFixture.start({
    hosts: 3,
    nats: 'cluster',
    controller: { id: CONTROLLER_ID, extraArgs: ['--replicas', '3'] },
    hostsTimeoutMs: 30_000,
    saveLogsOnFailure: 'nats-cluster',
  });
});

after(async () => {
  if (!passed && f) await f.saveLogs('nats-cluster');
  await f?.stop();
});

const { json, launch } = cliJobs(() => f);
const drover = (args: readonly string[]): ReturnType<ClusterFixture['drover']> => f.drover(args);

/** The NATS server a client connection named `name` is connected to (from each server's /connz). */
async function serverOf(name: string): Promise<NatsServer> {
  return waitForValue(async () => {
    for (const s of f.tb.nats!.servers) {
      if (s.pid() === undefined) continue;
      const connz = (await (await fetch(`${s.monitorUrl}/connz`)).json()) as {
        connections?: { name?: string }[];
      };
      if ((connz.connections ?? []).some((c) => c.name === name)) return s;
    }
    return undefined;
  }, 10_000);
}

/** The name of the server leading `stream`. */
async function streamLeader(stream: string): Promise<string> {
  return waitForValue(async () => {
    const m = await f.agents.bus.nc.request(`$JS.API.STREAM.INFO.${stream}`, '', { timeout: 2000 });
    const info = JSON.parse(new TextDecoder().decode(m.data)) as { cluster?: { leader?: string } };
    return info.cluster?.leader || undefined;
  });
}

/** Make `server` the leader of `stream` (leader step-downs elect another at random). */
async function moveLeader(stream: string, server: string): Promise<void> {
  for (let i = 0; i < 20 && (await streamLeader(stream)) !== server; i++) {
    await f.agents.bus.nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${stream}`, '', {
      timeout: 5000,
    });
    await sleep(500);
  }
}

interface DrainOp {
  opId: string;
  kind: string;
  state: string;
  items?: { jobId: string; state: string; destination: string | null; reason: string | null }[];
}

describe('a 3-node NATS cluster loses nothing when one server dies', () => {
  test('drain of h1 while the controller’s NATS server (the ops stream leader) is killed', async () => {
    // Some history before the crash: an operation record and events to find again afterwards.
    assert.equal((await drover(['cordon', 'h3'])).code, 0);
    assert.equal((await drover(['uncordon', 'h3'])).code, 0);

    const names = ['memory', 'pipeline', 'threads', 'files', 'redis', 'python'] as const;
    const started: { id: string; dir: string }[] = [];
    for (const name of names) {
      const job = await launch('h1', name, 'r3', name === 'memory' ? 64 : undefined);
      started.push({ id: job.id, dir: job.dir });
    }
    for (const s of started) await waitReady(s.dir, 30_000);

    // The hardest server to lose: the controller's own, made leader of the operations' stream.
    const victim = await serverOf(`drover-controller ${CONTROLLER_ID}`);
    await moveLeader('KV_drover_ops', victim.name);
    assert.equal(await streamLeader('KV_drover_ops'), victim.name, 'could not move the leader');
    const eventsBefore = await json<{ events: { seq: number; subject: string }[] }>([
      'events',
      '--limit',
      '10000',
    ]);
    assert.ok(eventsBefore.events.length > 0);

    const draining = drover(['drain', 'h1', '--parallel', '2']);
    // Kill it once the drain is under way: the first job has moved, others are to come.
    await waitFor(async () => {
      const ops = await json<{ ops: DrainOp[] }>(['ops']);
      return ops.ops.some(
        (o) => o.kind === 'drain' && (o.items ?? []).some((i) => i.state === 'done'),
      );
    }, 90_000);
    const pid = victim.pid();
    const killedAt = Date.now();
    await victim.kill();
    assert.ok(pid !== undefined && victim.pid() === undefined, 'the server did not die');

    const cli = await draining;
    assert.equal(cli.code, 0, `drain failed: ${cli.stderr}${cli.stdout}`);
    assert.match(cli.stdout, /drain of h1: done/);
    // The CLI showed each job's progress as it went (at least the ones before the crash).
    assert.match(cli.stderr, /^job-\S+: moved to h[23]; frozen \d+ ms$/m);
    assert.ok(
      f.controller.running(),
      `the controller stopped:\n${f.controller.output().slice(-3000)}`,
    );

    // The operation record is complete.
    const ops = await json<{ ops: DrainOp[] }>(['ops']);
    const drain = ops.ops.find((o) => o.kind === 'drain')!;
    assert.equal(drain.state, 'done', JSON.stringify(drain.items));
    assert.equal(drain.items!.length, names.length);
    for (const i of drain.items!) {
      assert.equal(i.state, 'done', JSON.stringify(i));
      assert.ok(i.destination === 'h2' || i.destination === 'h3', JSON.stringify(i));
    }
    assert.deepEqual(await json<DrainOp>(['status', drain.opId]), drain);

    // Every job runs on exactly one host, not h1, and verifies itself.
    const jobs = await json<{ jobs: { id: string; host: string; state: string }[] }>(['jobs']);
    for (const s of started) {
      const live = jobs.jobs.filter((j) => j.id === s.id && j.state === 'running');
      assert.equal(live.length, 1, `${s.id} is live on ${live.length} hosts`);
      const where = live[0]!.host;
      assert.ok(where === 'h2' || where === 'h3', `${s.id} is on ${where}`);
      const verdict = await requestVerdict(s.dir, signaller(f.agent(where), s.id), 30_000);
      assert.equal(verdict.ok, true, verdict.details);
    }

    // Cordons: h1 stays cordoned (also as persisted), and heartbeats still flow from every host.
    await waitFor(async () => {
      const hosts = await json<{
        hosts: { host: string; reachable: boolean; cordoned: boolean }[];
      }>(['hosts']);
      return (
        hosts.hosts.length === 3 &&
        hosts.hosts.every((h) => h.reachable && h.cordoned === (h.host === 'h1'))
      );
    }, 10_000);
    const cordons = await StateStore.open<{ cordoned: boolean }>(f.agents.bus, {
      bucket: 'drover_cordons',
    });
    assert.equal((await cordons.get('h1'))?.value.cordoned, true);
    assert.equal((await cordons.get('h3'))?.value.cordoned, false);

    // The lease: still held by the same controller, which kept acting throughout, and renewed
    // (a drain can end before the leases' stream has its new leader: renewals resume then).
    const leases = await StateStore.open<LeaseRecord>(f.agents.bus, { bucket: 'drover_leases' });
    let lease = await leases.get('leader');
    for (let i = 0; i < 100 && lease !== null && lease.value.expiresAt <= Date.now(); i++) {
      await sleep(100);
      lease = await leases.get('leader');
    }
    assert.equal(lease?.value.holder, CONTROLLER_ID);
    assert.ok(
      lease.value.expiresAt > Date.now(),
      `the lease is no longer renewed: ${JSON.stringify(lease)} at ${Date.now()}`,
    );

    // History: every event stored before the crash is still there, and new ones keep coming.
    const eventsAfter = await json<{
      events: { seq: number; subject: string; time: string; value: { phase?: string } }[];
    }>(['events', '--limit', '10000']);
    const after = new Map(eventsAfter.events.map((e) => [e.seq, e.subject]));
    for (const e of eventsBefore.events)
      assert.equal(after.get(e.seq), e.subject, `event ${e.seq}`);
    assert.ok(eventsAfter.events.length > eventsBefore.events.length);
    type Logged = { events: { time: string; subject: string }[] };
    const migrationAfterCrash = (got: Logged): boolean =>
      got.events.some(
        (e) => Date.parse(e.time) > killedAt + 1000 && e.subject.endsWith('.migration'),
      );
    if (!migrationAfterCrash(eventsAfter)) {
      // The drain's last moves can all fall in the 4-8 s the stream takes to elect a new leader
      // (events published then are not captured): a migration now must be stored.
      const first = jobs.jobs.find((j) => j.id === started[0]!.id && j.state === 'running')!;
      const to = first.host === 'h2' ? 'h3' : 'h2';
      assert.equal((await drover(['migrate', first.id, '--to', to])).code, 0);
      await waitFor(
        async () => migrationAfterCrash(await json<Logged>(['events', '--limit', '10000'])),
        15_000,
      );
    }

    for (const s of started) await drover(['signal', s.id, 'SIGKILL']);
    assert.equal((await drover(['uncordon', 'h1'])).code, 0);
    await victim.restart();
    passed = true;
  });
});
