/**
 * Coordinated cluster checkpoints and image sets end to end, through the `drover` CLI: real
 * agents in three emulated hosts, a real controller, CRIU, the JetStream object store, and
 * self-verifying workloads that check their whole state after they come back.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { ObjectFiles } from '@drover/bus';
import { isDroverError } from '@drover/common';
import { IMAGE_SET_BUCKET, type CutPlan, type HostFreeze, type ImageFile } from '@drover/protocol';
import { ControllerProcess } from '@drover/testbed';
import { ClusterFixture } from '../cluster/fixture.js';
import { waitReady, type WorkloadName } from '../workloads/mod.js';
import {
  cliJobs,
  liveHosts as liveHostsVia,
  verifyWorkload,
  type CliJob as Job,
} from './cli-jobs.js';
import { innerPids, sleep, waitForValue } from './helpers.js';

let f: ClusterFixture;

before(async () => {
  f = await ClusterFixture.start({ hosts: 3, controller: { id: 'ctl-ckpt-1' } });
});

after(async () => {
  await f?.stop();
});

interface ClusterJob {
  id: string;
  host: string;
  state: string;
}
interface Op {
  opId: string;
  kind: string;
  state: string;
  phase?: string;
  freezeSkewMs?: number | null;
  freezes?: HostFreeze[];
  cut?: CutPlan | null;
  members?: { jobId: string; host: string; state: string; frozenAtMs: number | null }[];
  error: { message: string } | null;
}
interface ImageSet {
  name: string;
  state: string;
  freezeSkewMs: number | null;
  jobs: { jobId: string; host: string; files: ImageFile[] }[];
}

const { json, launch } = cliJobs(() => f);
const drover = (args: readonly string[]): ReturnType<ClusterFixture['drover']> => f.drover(args);

/** Start workload `name` on `host` (64 MiB for `memory`), not waiting for it. */
const start = (host: string, name: WorkloadName, tag: string): Promise<Job> =>
  launch(host, name, tag, name === 'memory' ? 64 : undefined);

const liveHosts = (id: string): Promise<string[]> => liveHostsVia(f, id);

/** The job runs on exactly one host of `allowed` and its verdict is ok; returns the host. */
const verifyLive = (j: Job, allowed: string[]): Promise<string> => verifyWorkload(f, j, allowed);

/** A job the checkpoint stopped really stopped: nothing writes its heartbeat any more. */
async function assertStopped(j: Job): Promise<void> {
  assert.deepEqual(await liveHosts(j.id), [], `${j.id} still runs`);
  const size = statSync(join(j.dir, 'heartbeat.log')).size;
  await sleep(300);
  assert.equal(statSync(join(j.dir, 'heartbeat.log')).size, size, `${j.id} still writes`);
}

async function killAll(jobs: Job[]): Promise<void> {
  for (const j of jobs) await drover(['signal', j.id, 'SIGKILL']);
}

describe('coordinated cluster checkpoint and image sets', () => {
  test('checkpoint --all across 3 hosts, then restore --to h2 --to h3: every workload continues and verifies; the skew is reported', async () => {
    const jobs = [
      await start('h1', 'memory', 's1'),
      await start('h1', 'pipeline', 's1'),
      await start('h2', 'threads', 's1'),
      await start('h2', 'files', 's1'),
      await start('h3', 'redis', 's1'),
      await start('h3', 'python', 's1'),
    ];
    for (const j of jobs) await waitReady(j.dir, 30_000);
    const pidsBefore = new Map<string, number[]>();
    for (const j of jobs) pidsBefore.set(j.id, await innerPids(f.agent(j.host), j.id));

    const human = await drover(['checkpoint', '--all', '--name', 's1']);
    assert.equal(human.code, 0, human.stderr + human.stdout);
    assert.match(human.stdout, /checkpoint of image set s1: done/);
    assert.match(human.stdout, /freeze skew [\d.]+ ms \(first to last job frozen\)/);
    assert.match(human.stdout, /jobs stopped/);
    // Every job is stopped: it lives only in the image set now.
    for (const j of jobs) await assertStopped(j);
    // Ended jobs show with --all (plain `jobs` lists live ones).
    const { jobs: all } = await json<{ jobs: ClusterJob[] }>(['jobs', '--all']);
    for (const j of jobs) {
      assert.deepEqual(
        all.filter((x) => x.id === j.id).map((x) => [x.host, x.state]),
        [[j.host, 'checkpointed']],
      );
    }
    const set = await json<ImageSet>(['images', 'inspect', 's1']);
    assert.equal(set.state, 'complete');
    assert.equal(set.jobs.length, 6);
    assert.ok(set.freezeSkewMs !== null && set.freezeSkewMs >= 0);
    for (const sj of set.jobs) {
      assert.ok(sj.files.length > 3, `${sj.jobId} has ${sj.files.length} files`);
      for (const f of sj.files) assert.match(f.sha256, /^[0-9a-f]{64}$/);
      assert.ok(sj.files.some((f) => f.name === 'manifest.json'));
      // An image's small files (its manifest among them) are in one object, its pack.
      assert.ok(sj.files.find((f) => f.name === 'manifest.json')!.pack !== undefined);
    }
    const objects = set.jobs.reduce(
      (n, sj) => n + 1 + sj.files.filter((f) => f.pack === undefined).length,
      0,
    );
    const listed = await json<{ sets: ImageSet[] }>(['images', 'ls']);
    assert.ok(listed.sets.some((s) => s.name === 's1' && s.state === 'complete'));
    const ls = await drover(['images', 'ls']);
    assert.match(ls.stdout, /^s1\s+complete/m);

    // Restore onto h2 and h3 only: every job continues from the cut with its PIDs.
    const restored = await drover(['restore', 's1', '--to', 'h2', '--to', 'h3']);
    assert.equal(restored.code, 0, restored.stderr + restored.stdout);
    assert.match(restored.stdout, /restore of image set s1: done/);
    for (const j of jobs) {
      const host = await verifyLive(j, ['h2', 'h3']);
      assert.deepEqual(
        await innerPids(f.agent(host), j.id),
        pidsBefore.get(j.id),
        `${j.id}: PIDs inside changed`,
      );
    }
    // Still live: restoring again is refused and changes nothing.
    const again = await drover(['restore', 's1']);
    assert.equal(again.code, 4, again.stderr);
    assert.match(again.stderr, /stop those jobs first/);
    await killAll(jobs);
    // Delete the set: its objects go with it.
    const rm = await drover(['images', 'rm', 's1']);
    assert.equal(rm.code, 0, rm.stderr);
    // Each file stored alone and each image's pack.
    assert.match(rm.stdout, new RegExp(`deleted image set s1 \\(${objects} objects\\)`));
    const store = await ObjectFiles.open(f.agents.bus, { bucket: IMAGE_SET_BUCKET, create: false });
    assert.deepEqual(await store.list('s1/'), []);
    const gone = await drover(['images', 'inspect', 's1']);
    assert.equal(gone.code, 3, gone.stderr);
    assert.match(gone.stderr, /no image set s1/);
  });

  test('the barrier: each host freezes its jobs of the cut with one request, all or nothing; the record says how per host', async () => {
    const jobs = [
      await start('h1', 'python', 's7a'),
      await start('h1', 'node', 's7a'),
      await start('h1', 'pipeline', 's7a'),
      await start('h2', 'python', 's7b'),
      await start('h2', 'node', 's7b'),
      await start('h3', 'python', 's7c'),
    ];
    try {
      for (const j of jobs) await waitReady(j.dir, 30_000);
      const h1 = f.agent('h1').client;
      const onH1 = jobs.filter((j) => j.host === 'h1').map((j) => j.id);
      // All or nothing: one job of the request is not there, so none of them is frozen.
      await assert.rejects(h1.call('freeze-many', { jobIds: [...onH1, 'job-nope'] }), (e) =>
        isDroverError(e, 'NOT_FOUND'),
      );
      for (const id of onH1)
        assert.equal((await h1.call('inspect', { jobId: id })).state, 'running');
      // One request freezes all three, each with the time its kernel reported it frozen.
      const frozen = await h1.call('freeze-many', { jobIds: onH1 });
      assert.deepEqual(
        frozen.jobs.map((j) => [j.id, j.state]),
        onH1.map((id) => [id, 'frozen']),
      );
      for (const j of frozen.jobs) assert.ok(j.frozenAtMs > 0);
      for (const id of onH1) await h1.call('thaw', { jobId: id });

      const op = await json<Op>([
        'checkpoint',
        ...jobs.map((j) => j.id),
        '--name',
        's7',
        '--leave-running',
      ]);
      assert.equal(op.state, 'done', JSON.stringify(op.error));
      // One freeze request per host, naming every job of the cut on it.
      assert.deepEqual(
        [...op.freezes!]
          .sort((a, b) => a.host.localeCompare(b.host))
          .map((f) => [f.host, f.requests, [...f.jobIds].sort()]),
        ['h1', 'h2', 'h3'].map((h) => [
          h,
          1,
          jobs
            .filter((j) => j.host === h)
            .map((j) => j.id)
            .sort(),
        ]),
      );
      // The skew is first to last over every host; each host's own spread lies within it.
      for (const f of op.freezes!) assert.ok(f.skewMs >= 0 && f.skewMs <= op.freezeSkewMs!);
      const times = op.members!.map((m) => m.frozenAtMs!);
      assert.equal(
        op.freezeSkewMs,
        Math.round((Math.max(...times) - Math.min(...times)) * 10) / 10,
      );
      // A scheduled cut: one instant, sent to each host in its own clock (the hosts here share
      // one clock, so each estimated offset is within its round trip); nothing froze before it.
      const cut = op.cut!;
      assert.ok(
        cut.attempts >= 1 && cut.marginMs >= 100 && cut.marginMs <= 1000,
        `${cut.marginMs}`,
      );
      const sent = new Map<string, number>();
      for (const f of op.freezes!) {
        assert.ok(f.rttMs! >= 0 && Math.abs(f.offsetMs!) <= f.rttMs! / 2 + 0.01, JSON.stringify(f));
        assert.ok(Math.abs(f.cutAtMs! - (cut.atMs + f.offsetMs!)) < 0.01, JSON.stringify(f));
        assert.ok(f.lateMs! >= 0, JSON.stringify(f));
        sent.set(f.host, f.cutAtMs!);
      }
      for (const m of op.members!) {
        assert.ok(m.frozenAtMs! >= sent.get(m.host)!, `${m.jobId} froze before its host's instant`);
      }
      for (const j of jobs) assert.equal(await verifyLive(j, [j.host]), j.host);
    } finally {
      await killAll(jobs);
      await drover(['images', 'rm', 's7']);
    }
  });

  test('the controller is SIGKILLed during a cluster checkpoint; the standby completes it and the set restores', async () => {
    // Uploads at 20 MB/s: the 64 MiB image gives a few seconds to kill the controller in.
    for (const h of ['h1', 'h2', 'h3']) {
      await f.agent(h).restartWith({ DROVER_FAULT: 'throttle=20000000' });
    }
    const jobs = [
      await start('h1', 'memory', 's2'),
      await start('h2', 'node', 's2'),
      await start('h3', 'python', 's2'),
    ];
    try {
      for (const j of jobs) await waitReady(j.dir, 30_000);
      const running = drover(['--timeout', '20', 'checkpoint', '--all', '--name', 's2']);
      const during = await waitForValue(async () => {
        const { ops } = await json<{ ops: Op[] }>(['ops']);
        return ops.find((o) => o.kind === 'checkpoint' && o.phase === 'storing');
      }, 60_000);
      // A standby is waiting for the lease; the acting controller dies mid-upload.
      const standby = ControllerProcess.start(f.tb, { id: 'ctl-ckpt-standby' });
      await sleep(1000);
      await f.controller.kill();
      const cut = await running;
      assert.notEqual(cut.code, 0, 'the CLI cannot have seen the end of this checkpoint');
      f.controller = await standby;
      const done = await waitForValue(async () => {
        const op = await json<Op>(['status', during.opId]);
        return op.state === 'running' ? undefined : op;
      }, 180_000);
      assert.equal(done.state, 'done', JSON.stringify(done));
      assert.ok(done.members!.every((m) => m.state === 'done'));
      const set = await json<ImageSet>(['images', 'inspect', 's2']);
      assert.equal(set.state, 'complete');
      for (const j of jobs) await assertStopped(j);
      // The new controller's work is whole: the set restores (placement picks) and verifies.
      for (const h of ['h1', 'h2', 'h3']) await f.agent(h).restartWith({});
      const r = await drover(['restore', 's2']);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      for (const j of jobs) await verifyLive(j, ['h1', 'h2', 'h3']);
    } finally {
      for (const h of ['h1', 'h2', 'h3']) await f.agent(h).restartWith({});
      await killAll(jobs);
      await drover(['images', 'rm', 's2']);
    }
  });

  test('a failed upload rolls back: every job thawed where it was and verifying, no set left', async () => {
    await f.agent('h2').restartWith({ DROVER_FAULT: 'fail-push=2' });
    const jobs = [await start('h1', 'node', 's3'), await start('h2', 'python', 's3')];
    try {
      for (const j of jobs) await waitReady(j.dir, 30_000);
      const r = await drover(['checkpoint', jobs[0]!.id, jobs[1]!.id, '--name', 's3']);
      assert.equal(r.code, 1, r.stderr + r.stdout);
      assert.match(r.stdout, /injected fault: image push failed/);
      assert.match(r.stdout, /every job was thawed where it was/);
      for (const j of jobs) assert.equal(await verifyLive(j, [j.host]), j.host);
      const gone = await drover(['images', 'inspect', 's3']);
      assert.equal(gone.code, 3, gone.stderr);
      const { images } = await f.agent('h1').client.call('images-list', {});
      assert.deepEqual(images, [], 'local images left behind');
    } finally {
      await f.agent('h2').restartWith({});
      await killAll(jobs);
    }
  });

  test('an agent dies during the upload: the checkpoint rolls back once it is back; every job runs where it was', async () => {
    await f.agent('h1').restartWith({ DROVER_FAULT: 'throttle=8000000' });
    const jobs = [await start('h1', 'memory', 's5'), await start('h2', 'python', 's5')];
    try {
      for (const j of jobs) await waitReady(j.dir, 30_000);
      const running = drover(['checkpoint', '--all', '--name', 's5']);
      await waitForValue(async () => {
        const { ops } = await json<{ ops: Op[] }>(['ops']);
        return ops.find((o) => o.kind === 'checkpoint' && o.phase === 'storing');
      }, 60_000);
      await f.agent('h1').kill();
      // Long enough for the controller to see h1 gone and start rolling back (3 s in the suites).
      await sleep(5000);
      await f.agent('h1').restartWith({});
      const r = await running;
      assert.equal(r.code, 1, r.stderr + r.stdout);
      // Found by the controller's watch (no heartbeat, no answer to a liveness probe; or a new
      // process), or sooner by the request itself (its server gone, or its re-send met the
      // restarted agent): whichever comes first on a busy machine.
      assert.match(
        r.stdout,
        /the agent on h1 (stopped answering|restarted)|the server of drover\.agent\.h1\.image-(push|move) (restarted|went away)/,
      );
      assert.match(r.stdout, /every job was thawed where it was/);
      assert.doesNotMatch(r.stdout, /could not thaw/);
      for (const j of jobs) assert.equal(await verifyLive(j, [j.host]), j.host);
      assert.equal((await drover(['images', 'inspect', 's5'])).code, 3);
    } finally {
      await f.agent('h1').restartWith({});
      await killAll(jobs);
    }
  });

  test('one flipped byte in a stored image: the restore refuses before any job starts and names the file', async () => {
    const j = await start('h2', 'python', 's6');
    await waitReady(j.dir, 30_000);
    const op = await json<Op>(['checkpoint', j.id, '--name', 's6']);
    assert.equal(op.state, 'done');
    const store = await ObjectFiles.open(f.agents.bus, { bucket: IMAGE_SET_BUCKET, create: false });
    // The file is stored alone if it is large, else in its image's pack where the set says.
    const set = await json<ImageSet>(['images', 'inspect', 's6']);
    const pack = set.jobs[0]!.files.find((x) => x.name === 'pages-1.img')!.pack;
    const name = `s6/${j.id}/${pack ? '.pack' : 'pages-1.img'}`;
    const parts: Uint8Array[] = [];
    for await (const c of store.get(name)) parts.push(c);
    const bytes = Buffer.concat(parts);
    const [from, length] = pack ? [pack.offset, pack.length] : [0, bytes.length];
    const sealed = bytes.subarray(from, from + length);
    assert.equal(sealed.subarray(0, 8).toString(), 'DRVIMG2\n', 'stored images are sealed');
    sealed[Math.floor(sealed.length / 2)]! ^= 0x01;
    await store.put(
      name,
      (async function* () {
        yield bytes;
      })(),
    );
    const r = await drover(['restore', 's6']);
    assert.equal(r.code, 1, r.stderr + r.stdout);
    assert.match(r.stdout, new RegExp(`image file s6/${j.id}/pages-1.img failed verification`));
    assert.match(r.stdout, /nothing was restored/);
    assert.deepEqual(await liveHosts(j.id), []);
    assert.equal((await drover(['images', 'rm', 's6'])).code, 0);
  });

  test('bad input: clear message, documented exit code, nothing changes', async () => {
    const j = await start('h3', 'python', 's4');
    await waitReady(j.dir, 30_000);
    const cases: [string[], number, RegExp][] = [
      [['checkpoint'], 2, /name the jobs to checkpoint, or --all/],
      [['checkpoint', j.id, '--all'], 2, /not both/],
      [['checkpoint', 'job-nope'], 3, /no running job job-nope/],
      [['checkpoint', j.id, '--name', 'bad name!'], 2, /name/],
      [['restore', 'no-such-set'], 3, /no image set no-such-set/],
      [['images', 'rm', 'no-such-set'], 3, /no image set no-such-set/],
      [['images'], 2, /ls, inspect NAME or rm NAME/],
    ];
    for (const [args, code, message] of cases) {
      const r = await drover(args);
      assert.equal(r.code, code, `drover ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, `drover ${args.join(' ')}`);
    }
    // A set to clash with: a leave-running checkpoint keeps the job running and verifying.
    const ok = await json<Op>(['checkpoint', j.id, '--name', 's4', '--leave-running']);
    assert.equal(ok.state, 'done');
    await verifyLive(j, ['h3']);
    const clash = await drover(['checkpoint', j.id, '--name', 's4']);
    assert.equal(clash.code, 4, clash.stderr);
    assert.match(clash.stderr, /image set s4 exists/);
    const busy = await drover(['restore', 's4']);
    assert.equal(busy.code, 4, busy.stderr);
    assert.match(busy.stderr, /is running on h3; stop those jobs first/);
    const toUnknown = await drover(['restore', 's4', '--to', 'h9']);
    assert.equal(toUnknown.code, 3, toUnknown.stderr);
    assert.match(toUnknown.stderr, /no host h9/);
    // Nothing changed: still one live copy on h3, verifying; the set is still there.
    await verifyLive(j, ['h3']);
    assert.equal((await json<ImageSet>(['images', 'inspect', 's4'])).state, 'complete');
    await killAll([j]);
    assert.equal((await drover(['images', 'rm', 's4'])).code, 0);
  });
});
