/**
 * The agent end to end: real agents in emulated hosts, real NATS and CRIU, self-checking workloads.
 * Run, checkpoint, kill, restore and verify; leave-running; agent restarts; freeze/thaw;
 * preflight; typed errors.
 *
 * Over 500 lines on purpose: one suite on one testbed (bringing a testbed up costs a minute on
 * these machines); its tests share that cluster and read top to bottom as one agent's life.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isDroverError } from '@drover/common';
import { IMAGE_KEY_PATTERN, type JobInfo } from '@drover/protocol';
import type { AgentHandle } from '@drover/testbed';
import { REPO_ROOT } from '../cluster/cli.js';
import { ClusterFixture } from '../cluster/fixture.js';
import {
  WORKLOAD_NAMES,
  readHeartbeats,
  requestVerdict,
  waitReady,
  workloadCommand,
  type WorkloadName,
} from '../workloads/mod.js';
import {
  innerPids,
  JOB_ENV,
  settledPids,
  signaller as signalVia,
  sleep,
  waitFor,
  waitForValue,
} from './helpers.js';

let f: ClusterFixture;
/** The key local images are sealed with: the caller's, never kept by the host. */
const KEY = randomBytes(32).toString('base64');
let h1: AgentHandle;
let h2: AgentHandle;

const AGENT_DIST = join(REPO_ROOT, 'agent', 'dist');

function readOptional(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

before(async () => {
  f = await ClusterFixture.start({ hosts: 2, controller: false });
  h1 = f.agent('h1');
  h2 = f.agent('h2');
});

after(async () => {
  await f?.stop();
});

/** A fresh work directory inside a host's /srv, returned as [inside path, runner path]. */
function workDir(agent: AgentHandle, name: string): [string, string] {
  const inside = `/srv/work/${name}`;
  const outside = agent.srvPath(inside);
  mkdirSync(outside, { recursive: true });
  return [inside, outside];
}

async function runWorkload(
  agent: AgentHandle,
  name: WorkloadName,
  tag: string,
): Promise<{ job: JobInfo; dir: string }> {
  const [inside, outside] = workDir(agent, `${name}-${tag}`);
  const command = workloadCommand(name, { dir: inside, ...(name === 'memory' ? { mb: 64 } : {}) });
  const job = await agent.client.call('run', { command, env: JOB_ENV, name: `${name}-${tag}` });
  await waitReady(outside, 20_000);
  return { job, dir: outside };
}

function processAlive(agent: AgentHandle, job: JobInfo): Promise<boolean> {
  return agent.host
    .exec([
      'sh',
      '-c',
      `test -d /proc/${job.rootPid} && ! grep -q '^State:.*Z' /proc/${job.rootPid}/status`,
    ])
    .then((r) => r.code === 0);
}

describe('agent: jobs, checkpoint and restore on one host', () => {
  for (const name of WORKLOAD_NAMES) {
    test(`${name}: run, checkpoint, restore; same PIDs inside; verifies itself`, async () => {
      const { job, dir } = await runWorkload(h1, name, 'cr');
      assert.equal(job.state, 'running');
      assert.equal((await requestVerdict(dir, signaller(h1, job.id), 20_000)).ok, true);
      const pidsBefore = await innerPids(h1, job.id);

      const image = await h1.client.call('checkpoint', { key: KEY, jobId: job.id });
      assert.ok(image.sizeBytes > 0);
      const stopped = await h1.client.call('inspect', { jobId: job.id });
      assert.equal(stopped.state, 'checkpointed');
      assert.equal(
        await processAlive(h1, job),
        false,
        'the job still runs after a stopping checkpoint',
      );

      const restored = await h1.client.call('restore', { key: KEY, imageId: image.imageId });
      assert.equal(restored.state, 'running');
      assert.equal(restored.restoredFrom, image.imageId);
      assert.equal(restored.mainPidInside, job.mainPidInside);
      assert.deepEqual(await settledPids(() => innerPids(h1, job.id), pidsBefore), pidsBefore);
      const v = await requestVerdict(dir, signaller(h1, job.id), 30_000);
      assert.equal(v.ok, true, v.details);
      await h1.client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
    });
  }

  test('leave-running: the job never stops, and the image restores', async () => {
    const { job, dir } = await runWorkload(h1, 'node', 'lr');
    const image = await h1.client.call('checkpoint', {
      key: KEY,
      jobId: job.id,
      leaveRunning: true,
    });
    assert.equal(image.leaveRunning, true);
    const info = await h1.client.call('inspect', { jobId: job.id });
    assert.equal(info.state, 'running');
    const hb1 = (await readHeartbeats(dir)).count;
    await sleep(300);
    assert.ok(
      (await readHeartbeats(dir)).count > hb1,
      'no heartbeats after a leave-running checkpoint',
    );

    // A restore while the job runs is refused and changes nothing.
    await assert.rejects(
      h1.client.call('restore', { key: KEY, imageId: image.imageId }),
      (e: unknown) => isDroverError(e, 'FAILED_PRECONDITION'),
    );
    assert.equal((await h1.client.call('inspect', { jobId: job.id })).state, 'running');
    // Sealed after the job went on running (the restore above waited for it): all of it.
    const imageDir = h1.srvPath(image.dir);
    for (const f of readdirSync(imageDir).filter((x) => x !== 'manifest.json')) {
      assert.equal(
        readFileSync(join(imageDir, f)).subarray(0, 8).toString('latin1'),
        'DRVIMG2\n',
        f,
      );
    }
    await h1.client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
    await waitState(h1, job.id, (s) => s === 'exited');
    const atKill = (await readHeartbeats(dir)).last!.n;
    const restored = await h1.client.call('restore', { key: KEY, imageId: image.imageId });
    assert.equal(restored.state, 'running');
    // The restored job is the one in the image: its counter resumes from the checkpoint, below
    // where the original got to, and keeps going.
    const resumed = await waitForValue(async () => {
      const last = (await readHeartbeats(dir)).last!;
      return last.n < atKill ? last.n : undefined;
    });
    await waitFor(async () => (await readHeartbeats(dir)).last!.n > resumed);
    await h1.client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
  });

  test('local images are sealed at rest: wrong key or a flipped byte refused before restore', async () => {
    const { job, dir } = await runWorkload(h1, 'memory', 'seal');
    const image = await h1.client.call('checkpoint', { key: KEY, jobId: job.id });
    const imageDir = h1.srvPath(image.dir);
    assert.equal(statSync(imageDir).mode & 0o777, 0o700);
    const files = readdirSync(imageDir).filter((f) => f !== 'manifest.json');
    assert.ok(
      files.some((f) => f.startsWith('pages-')),
      files.join(' '),
    );
    for (const f of [...files, 'manifest.json']) {
      assert.equal(statSync(join(imageDir, f)).mode & 0o777, 0o600, f);
    }
    // Every file CRIU wrote is sealed: the magic, and none of the job's memory in the clear
    // (the memory workload fills its pages with a pattern it can check; CRIU's own image magic
    // would start a plaintext file).
    for (const f of files) {
      const head = readFileSync(join(imageDir, f)).subarray(0, 8).toString('latin1');
      assert.equal(head, 'DRVIMG2\n', `${f} is not sealed`);
    }
    // No plaintext left behind in scratch.
    const shm = await h1.host.exec([
      'sh',
      '-c',
      `ls -A /dev/shm/drover/h1 2>/dev/null | grep -x image-${image.imageId} || true`,
    ]);
    assert.equal(shm.stdout.trim(), '', 'a plaintext dump was left in tmpfs');

    // The wrong key: refused, nothing restored, the image untouched.
    const wrong = randomBytes(32).toString('base64');
    await assert.rejects(
      h1.client.call('restore', { key: wrong, imageId: image.imageId }),
      (e: unknown) => isDroverError(e, 'DATA_LOSS') && /failed verification/.test(String(e)),
    );
    assert.equal((await h1.client.call('inspect', { jobId: job.id })).state, 'checkpointed');
    // One flipped byte in the pages: refused, naming the file.
    const pages = files.find((f) => f.startsWith('pages-'))!;
    const path = join(imageDir, pages);
    const bytes = readFileSync(path);
    const at = Math.floor(bytes.length / 2);
    bytes[at] = bytes[at]! ^ 0x01;
    writeFileSync(path, bytes);
    await assert.rejects(
      h1.client.call('restore', { key: KEY, imageId: image.imageId }),
      (e: unknown) => isDroverError(e, 'DATA_LOSS') && String(e).includes(pages),
    );
    assert.equal((await h1.client.call('inspect', { jobId: job.id })).state, 'checkpointed');
    // Put right, the right key restores it, and it verifies its own memory.
    bytes[at] = bytes[at]! ^ 0x01;
    writeFileSync(path, bytes);
    const restored = await h1.client.call('restore', { key: KEY, imageId: image.imageId });
    assert.equal(restored.state, 'running');
    const v = await requestVerdict(dir, signaller(h1, job.id), 30_000);
    assert.equal(v.ok, true, v.details);
    await h1.client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
  });

  test("a frozen job's image is sealed once it runs; an agent that dies first leaves no plaintext", async () => {
    const { job, dir } = await runWorkload(h1, 'python', 'late');
    const shmHas = async (imageId: string): Promise<boolean> =>
      (await h1.host.exec(['test', '-e', `/dev/shm/drover/h1/image-${imageId}`])).code === 0;
    // Frozen (as a cluster's cut holds it): the image is listed at once, sealed only later.
    await h1.client.call('freeze', { jobId: job.id });
    const first = await h1.client.call('checkpoint', {
      key: KEY,
      jobId: job.id,
      leaveRunning: true,
    });
    assert.ok(
      (await h1.client.call('images-list', {})).images.some((i) => i.imageId === first.imageId),
    );
    assert.equal(await shmHas(first.imageId), true, 'the plaintext waits in tmpfs while frozen');
    await h1.client.call('thaw', { jobId: job.id });
    await waitFor(async () => !(await shmHas(first.imageId)), 20_000);
    const firstDir = h1.srvPath(first.dir);
    for (const f of readdirSync(firstDir).filter((x) => x !== 'manifest.json')) {
      assert.equal(
        readFileSync(join(firstDir, f)).subarray(0, 8).toString('latin1'),
        'DRVIMG2\n',
        f,
      );
    }
    // The agent dies before a frozen job's image is sealed: the new agent drops the unfinished
    // image and its plaintext; the job is untouched.
    await h1.client.call('freeze', { jobId: job.id });
    const second = await h1.client.call('checkpoint', {
      key: KEY,
      jobId: job.id,
      leaveRunning: true,
    });
    await h1.kill();
    await h1.start();
    assert.equal(await shmHas(second.imageId), false, 'plaintext left in tmpfs after a restart');
    const images = (await h1.client.call('images-list', {})).images.map((i) => i.imageId);
    assert.ok(images.includes(first.imageId) && !images.includes(second.imageId), images.join(' '));
    await assert.rejects(
      h1.client.call('restore', { key: KEY, imageId: second.imageId }),
      (e: unknown) => isDroverError(e, 'NOT_FOUND'),
    );
    await h1.client.call('thaw', { jobId: job.id });
    assert.equal((await requestVerdict(dir, signaller(h1, job.id), 20_000)).ok, true);
    await h1.client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
  });

  test('freeze and thaw; restore left frozen, then thaw', async () => {
    const { job, dir } = await runWorkload(h1, 'python', 'fz');
    await h1.client.call('freeze', { jobId: job.id });
    const n1 = (await readHeartbeats(dir)).count;
    await sleep(400);
    assert.equal((await readHeartbeats(dir)).count, n1, 'heartbeats while frozen');
    await h1.client.call('thaw', { jobId: job.id });
    await waitFor(async () => (await readHeartbeats(dir)).count > n1);

    const image = await h1.client.call('checkpoint', { key: KEY, jobId: job.id });
    const r = await h1.client.call('restore', {
      key: KEY,
      imageId: image.imageId,
      leaveFrozen: true,
    });
    assert.equal(r.state, 'frozen');
    const n2 = (await readHeartbeats(dir)).count;
    await sleep(400);
    assert.equal((await readHeartbeats(dir)).count, n2, 'heartbeats while restored frozen');
    await h1.client.call('thaw', { jobId: job.id });
    await waitFor(async () => (await readHeartbeats(dir)).count > n2);
    assert.equal((await requestVerdict(dir, signaller(h1, job.id), 20_000)).ok, true);
    await h1.client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
  });

  test('kill -9 the agent: jobs keep running, the new agent reports their exit code', async () => {
    const job = await h2.client.call('run', {
      command: ['/bin/sh', '-c', 'trap "exit 7" TERM; while :; do sleep 0.1; done'],
      name: 'exit-seven',
    });
    const { job: wl, dir } = await runWorkload(h2, 'node', 'restart');
    await h2.kill();
    assert.equal(await processAlive(h2, job), true, 'job died with its agent');
    await h2.start();
    const listed = await h2.client.call('list', {});
    for (const j of [job, wl]) {
      assert.equal(
        listed.jobs.find((x) => x.id === j.id)?.state,
        'running',
        `${j.id} not running after restart`,
      );
    }
    assert.equal((await requestVerdict(dir, signaller(h2, wl.id), 20_000)).ok, true);
    await h2.client.call('signal', { jobId: job.id, signal: 'SIGTERM' });
    const ended = await waitState(h2, job.id, (s) => s === 'exited');
    assert.equal(ended.exitCode, 7);
    await h2.client.call('signal', { jobId: wl.id, signal: 'SIGKILL' });
  });

  test('preflight names a TCP connection to outside the host and a file missing on the destination', async () => {
    // A listener on h2 and, on h1, a job connected to it (h2 is outside h1).
    const listener = await f.tb
      .host('h2')
      .spawn(
        [
          '/usr/bin/python3',
          '-c',
          `import socket,time\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("${f.tb.host('h2').address}", 7701)); s.listen(4)\nc=[]\nwhile True: c.append(s.accept())`,
        ],
        { name: 'pf-listener' },
      );
    try {
      await sleep(300);
      const tcpJob = await h1.client.call('run', {
        command: [
          '/usr/bin/python3',
          '-c',
          `import socket,time\nc=socket.create_connection(("${f.tb.host('h2').address}", 7701))\nwhile True: time.sleep(1)`,
        ],
        name: 'pf-tcp',
      });
      await sleep(500);
      const report = await h1.client.call('preflight', { jobId: tcpJob.id });
      assert.equal(report.ok, false);
      const tcp = report.reasons.find((r) => r.code === 'EXTERNAL_TCP');
      assert.ok(tcp, `no EXTERNAL_TCP in ${JSON.stringify(report.reasons)}`);
      assert.match(tcp.message, new RegExp(f.tb.host('h2').address.replace(/\./g, '\\.')));
      await h1.client.call('signal', { jobId: tcpJob.id, signal: 'SIGKILL' });
    } finally {
      listener.kill('SIGKILL');
    }

    // A file that exists only on h1 (under its private /srv), held open by the job.
    const [inside, outside] = workDir(h1, 'pf-file');
    writeFileSync(`${outside}/data.bin`, 'x'.repeat(100));
    const fileJob = await h1.client.call('run', {
      command: [
        '/usr/bin/python3',
        '-c',
        `import time\nf=open("${inside}/data.bin")\nwhile True: time.sleep(1)`,
      ],
      name: 'pf-file',
    });
    await sleep(500);
    const clean = await h1.client.call('preflight', { jobId: fileJob.id });
    assert.equal(clean.reasons.filter((r) => r.code.startsWith('FILE_')).length, 0);
    const report = await h1.client.call('preflight', { jobId: fileJob.id, destination: 'h2' });
    const missing = report.reasons.find((r) => r.code === 'FILE_MISSING_ON_DESTINATION');
    assert.ok(missing, `no FILE_MISSING_ON_DESTINATION in ${JSON.stringify(report.reasons)}`);
    assert.match(missing.message, /data\.bin/);
    await h1.client.call('signal', { jobId: fileJob.id, signal: 'SIGKILL' });
  });

  test('a process inside a job checkpoints itself through its socket and keeps running', async () => {
    const [inside, outside] = workDir(h1, 'self');
    const cli = `${AGENT_DIST}/self-checkpoint-cli.js`;
    const script = [
      'i=0',
      `while [ $i -lt 5 ]; do i=$((i+1)); echo $i >> ${inside}/ticks; sleep 0.05; done`,
      `${process.execPath} ${cli} --json > ${inside}/cli.out 2> ${inside}/cli.err; echo $? > ${inside}/cli.status`,
      `while :; do i=$((i+1)); echo $i >> ${inside}/ticks; sleep 0.05; done`,
    ].join('\n');
    const job = await h1.client.call('run', {
      command: ['/bin/sh', '-c', script],
      env: JOB_ENV,
      name: 'self',
    });
    const status = await waitForValue(
      async () => readOptional(`${outside}/cli.status`)?.match(/^(\d+)\n/)?.[1],
      30_000,
    );
    assert.equal(status, '0', readOptional(`${outside}/cli.err`) ?? '');
    const image = JSON.parse(readOptional(`${outside}/cli.out`)!) as {
      imageId: string;
      jobId: string;
      key: string;
    };
    assert.equal(image.jobId, job.id);
    // Nobody else holds a key for a job's own checkpoint: the job gets the one it is sealed with.
    assert.match(image.key, IMAGE_KEY_PATTERN);
    const images = (await h1.client.call('images-list', {})).images;
    assert.ok(
      images.some((i) => i.imageId === image.imageId && i.leaveRunning),
      'image not listed',
    );
    assert.equal((await h1.client.call('inspect', { jobId: job.id })).state, 'running');
    const ticks = Number(readOptional(`${outside}/ticks`)!.trim().split('\n').pop());
    await waitFor(
      async () => Number(readOptional(`${outside}/ticks`)!.trim().split('\n').pop()) > ticks + 3,
    );
    await h1.client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
    await waitState(h1, job.id, (s) => s === 'exited');
    // With that key the image restores; with another it does not.
    await assert.rejects(
      h1.client.call('restore', { key: KEY, imageId: image.imageId }),
      (e: unknown) => isDroverError(e, 'DATA_LOSS'),
    );
    // The job's key opens it: CRIU gets to read it (and here refuses it: the job's cli.out grew
    // after the checkpoint, which CRIU checks).
    const opened = await h1.client.call('restore', { key: image.key, imageId: image.imageId }).then(
      async (back) => {
        await h1.client.call('signal', { jobId: back.id, signal: 'SIGKILL' });
        return 'restored';
      },
      (e: unknown) => (isDroverError(e) ? e.code : String(e)),
    );
    assert.ok(opened === 'restored' || opened === 'CRIU', opened);
  });

  test('adopt a process tree; its restore needs its PIDs free and says so before trying', async () => {
    const [inside, outside] = workDir(h2, 'adopt');
    // setsid -f: a session of its own inside the host (CRIU needs the session leader in the tree).
    // Its stdio goes to /dev/null: an inherited pipe to the test runner would be an external socket.
    await f.tb
      .host('h2')
      .exec([
        '/bin/sh',
        '-c',
        `setsid -f /bin/sh -c 'echo $$ > ${inside}/pid; i=0; while :; do i=$((i+1)); echo $i >> ${inside}/ticks; sleep 0.05; done' </dev/null >/dev/null 2>&1`,
      ]);
    // `echo $$ > pid` truncates before writing: wait for a whole number.
    const pid = Number(
      await waitForValue(async () => readOptional(`${outside}/pid`)?.match(/^(\d+)\n/)?.[1]),
    );
    await waitFor(async () => readOptional(`${outside}/ticks`) !== undefined);
    const job = await h2.client.call('adopt', { pid, name: 'adoptee' });
    assert.equal(job.kind, 'adopted');
    assert.equal(job.rootPid, pid);
    const image = await h2.client.call('checkpoint', {
      key: KEY,
      jobId: job.id,
      leaveRunning: true,
    });
    const lastTick = (): number =>
      Number(readOptional(`${outside}/ticks`)!.trim().split('\n').pop());
    const atCheckpoint = lastTick();
    await waitFor(async () => lastTick() > atCheckpoint + 10); // so a restored counter is told apart
    // Restoring while the original holds the PIDs is refused up front, naming them.
    const err = await h2.client.call('restore', { key: KEY, imageId: image.imageId }).then(
      () => assert.fail('restore of an adopted tree succeeded while its PIDs are taken'),
      (e: unknown) => e,
    );
    assert.ok(isDroverError(err, 'FAILED_PRECONDITION'), String(err));
    assert.match((err as Error).message, new RegExp(`PIDs .*${pid}`));
    await h2.client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
    await waitState(h2, job.id, (st) => st === 'exited');
    await sleep(200); // the loop's last `sleep` child ends too
    const atKill = Number(readOptional(`${outside}/ticks`)!.trim().split('\n').pop());
    const restored = await h2.client.call('restore', { key: KEY, imageId: image.imageId });
    assert.equal(restored.rootPid, pid, 'adopted tree restored with another PID');
    const resumed = await waitForValue(async () => {
      const n = Number(readOptional(`${outside}/ticks`)!.trim().split('\n').pop());
      return n < atKill ? n : undefined;
    });
    await waitFor(
      async () => Number(readOptional(`${outside}/ticks`)!.trim().split('\n').pop()) > resumed,
    );
    await h2.client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
  });

  test('unknown jobs, malformed payloads and wrong types get typed errors; the agent keeps serving', async () => {
    await assert.rejects(h1.client.call('inspect', { jobId: 'job-nope' }), (e: unknown) =>
      isDroverError(e, 'NOT_FOUND'),
    );
    await assert.rejects(
      h1.client.call('signal', { jobId: 'job-nope', signal: 'SIGTERM' }),
      (e: unknown) => isDroverError(e, 'NOT_FOUND'),
    );
    const bad: unknown[] = [
      { command: 'not-an-array' },
      { command: [] },
      { command: ['x'], memoryLimitBytes: 'lots' },
      { command: ['x'], surprise: true },
      { command: ['x'], cwd: 'relative' },
    ];
    for (const payload of bad) {
      await assert.rejects(h1.client.call('run', payload as never), (e: unknown) =>
        isDroverError(e, 'INVALID_ARGUMENT'),
      );
    }
    await assert.rejects(
      f.agents.bus.request('drover.agent.h1.run', new TextEncoder().encode('{not json')),
      (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'),
    );
    await assert.rejects(f.agents.bus.request('drover.agent.h1.no-such-op', {}), (e: unknown) =>
      isDroverError(e, 'NOT_FOUND'),
    );
    await assert.rejects(
      h1.client.call('signal', { jobId: '../../etc', signal: 'SIGTERM' }),
      (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'),
    );
    const info = await h1.client.call('info', {});
    assert.equal(info.host, 'h1');
    assert.ok(info.criu.version.startsWith('4.'));
  });
});

async function waitState(
  agent: AgentHandle,
  jobId: string,
  ok: (s: string) => boolean,
  timeoutMs = 15_000,
): Promise<JobInfo> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const j = await agent.client.call('inspect', { jobId });
    if (ok(j.state)) return j;
    if (Date.now() > deadline) throw new Error(`job ${jobId} stuck in ${j.state}`);
    await sleep(50);
  }
}

const signaller = signalVia;
