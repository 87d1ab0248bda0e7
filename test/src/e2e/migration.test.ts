/**
 * Live migration end to end: real agents in three emulated hosts, real NATS and CRIU, workloads
 * that verify themselves after every hop; faults that must leave the job running where it was.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { isDroverError } from '@drover/common';
import type { JobInfo, MigrationRecord } from '@drover/protocol';
import type { AgentHandle } from '@drover/testbed';
import { ClusterFixture } from '../cluster/fixture.js';
import { makeCert } from '../cluster/certs.js';
import {
  WORKLOAD_NAMES,
  readHeartbeats,
  requestVerdict,
  waitReady,
  workloadCommand,
} from '../workloads/mod.js';
import {
  innerPids as innerPidsVia,
  JOB_ENV,
  settledPids,
  signaller as signalVia,
  sleep,
  waitFor,
} from './helpers.js';

let f: ClusterFixture;
/** Job data lives on storage every host sees (as on a real cluster's shared filesystem). */
let shared: string;

before(async () => {
  f = await ClusterFixture.start({ hosts: 3, controller: false });
  shared = join(f.runDir, 'shared');
  mkdirSync(shared, { recursive: true });
});

after(async () => {
  await f?.stop();
});

const agent = (name: string): AgentHandle => f.agent(name);

/** Where the job runs now: exactly one agent must report it running; the others must not. */
async function whereRunning(jobId: string): Promise<string> {
  const found: string[] = [];
  for (const a of f.agents.agents) {
    const jobs = (await a.client.call('list', {})).jobs;
    const j = jobs.find((x) => x.id === jobId);
    if (j && ['running', 'frozen', 'migrating', 'checkpointing'].includes(j.state))
      found.push(`${a.hostId}:${j.state}`);
  }
  assert.equal(
    found.length,
    1,
    `job ${jobId} is live on ${found.length} hosts: ${found.join(', ')}`,
  );
  return found[0]!.split(':')[0]!;
}

async function startWorkload(
  host: string,
  name: (typeof WORKLOAD_NAMES)[number],
  tag: string,
): Promise<{ job: JobInfo; dir: string }> {
  const dir = join(shared, `${name}-${tag}`);
  mkdirSync(dir, { recursive: true });
  const command = workloadCommand(name, { dir, ...(name === 'memory' ? { mb: 64 } : {}) });
  const job = await agent(host).client.call('run', {
    command,
    env: JOB_ENV,
    name: `${name}-${tag}`,
  });
  await waitReady(dir, 20_000);
  return { job, dir };
}

/** No scratch images left on any host, and no image files under any agent's state dir. */
async function assertNoImagesLeft(migrationId: string): Promise<void> {
  for (const h of f.tb.hosts) {
    for (const root of [h.path('/dev/shm/drover'), join(h.stateDir, 'drover', 'scratch')]) {
      const dir = join(root, h.name, migrationId);
      // The destination removes its scratch once it has answered the source: give it a moment.
      await waitFor(async () => !existsSync(dir), 2000).catch(() => undefined);
      assert.ok(!existsSync(dir), `scratch ${dir} left behind`);
    }
    const images = join(h.stateDir, 'drover', 'images');
    const count = existsSync(images) ? readdirSync(images).length : 0;
    assert.equal(count, 0, `${h.name} wrote ${count} image directories to disk`);
  }
}

describe('live migration', () => {
  for (const name of WORKLOAD_NAMES) {
    test(`${name} moves h1 → h2 → h3 → h1, verifying itself after each hop`, async () => {
      const { job, dir } = await startWorkload('h1', name, 'hop');
      const pids = await innerPids('h1', job.id);
      let at = 'h1';
      for (const next of ['h2', 'h3', 'h1']) {
        const rec = await f.agents.migrate(job.id, at, next);
        assert.equal(rec.state, 'done');
        assert.ok(rec.stats.frozenMs > 0 && rec.stats.bytes > 0, JSON.stringify(rec.stats));
        assert.equal(await whereRunning(job.id), next);
        assert.deepEqual(
          await settledPids(() => innerPids(next, job.id), pids),
          pids,
          `PIDs changed on ${next}`,
        );
        const v = await requestVerdict(dir, signaller(next, job.id), 30_000);
        assert.equal(v.ok, true, `${name} on ${next}: ${v.details}`);
        await assertNoImagesLeft(rec.migrationId);
        const src = (await agent(at).client.call('inspect', { jobId: job.id })).state;
        assert.equal(src, 'migrated');
        at = next;
      }
      await agent(at).client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
    });
  }
});

describe('streams with certificates', () => {
  test('with stream certificates configured, agents migrate over mutual TLS; progress events flow', async () => {
    const dir = join(f.tb.runDir, 'certs');
    const env = (h: string): Record<string, string> => {
      const c = makeCert(dir, h, f.tb.host(h).address);
      return {
        DROVER_STREAM_CA: c.caFile,
        DROVER_STREAM_CERT: c.certFile,
        DROVER_STREAM_KEY: c.keyFile,
      };
    };
    await agent('h1').restartWith(env('h1'));
    await agent('h2').restartWith(env('h2'));
    const phases: string[] = [];
    const stop = f.agents.bus.subscribe('drover.evt.h1.migration', (_s, v) =>
      phases.push((v as { phase: string }).phase),
    );
    try {
      const { job, dir: wd } = await startWorkload('h1', 'node', 'tls');
      const rec = await f.agents.migrate(job.id, 'h1', 'h2');
      assert.equal(rec.state, 'done');
      assert.equal((await requestVerdict(wd, signaller('h2', job.id), 30_000)).ok, true);
      await f.agents.bus.flush();
      await sleep(100);
      for (const p of ['prepared', 'dumped', 'done'])
        assert.ok(phases.includes(p), `no ${p} event in ${phases.join(',')}`);
      const log = agent('h2').process!.output();
      assert.match(log, /"tls":true/, 'the destination stream server did not listen with TLS');
      await agent('h2').client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
    } finally {
      stop();
      await agent('h1').restartWith({});
      await agent('h2').restartWith({});
    }
  });
});

describe('post-copy', () => {
  test('a 1 GiB memory job moves in post-copy mode and verifies its whole pattern', async (t) => {
    const dir = join(shared, 'postcopy-1g');
    mkdirSync(dir, { recursive: true });
    const job = await agent('h2').client.call('run', {
      command: workloadCommand('memory', { dir, mb: 1024 }),
      env: JOB_ENV,
      name: 'postcopy-1g',
    });
    await waitReady(dir, 120_000);
    const rec = await f.agents.migrate(job.id, 'h2', 'h3', {
      mode: 'post-copy',
      timeoutMs: 300_000,
    });
    assert.equal(rec.mode, 'post-copy');
    assert.equal(rec.state, 'done');
    assert.equal(await whereRunning(job.id), 'h3');
    const v = await requestVerdict(dir, signaller('h3', job.id), 120_000);
    assert.equal(v.ok, true, v.details);
    const gap = (await readHeartbeats(dir)).maxGapMs;
    t.diagnostic(
      `post-copy 1 GiB: recorded downtime ${rec.stats.frozenMs} ms, longest heartbeat gap ${gap} ms, ` +
        `total ${rec.stats.totalMs} ms, ${rec.stats.pages} pages`,
    );
    assert.ok(rec.stats.frozenMs > 0);
    await assertNoImagesLeft(rec.migrationId);
    await agent('h3').client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
  });
});

describe('stop-and-copy: memory goes CRIU to CRIU, never to a disk', () => {
  test("the pages land in the destination's tmpfs while CRIU dumps; none on the source, none on any disk", async () => {
    // A slow link into h2 keeps the pages in flight long enough to look at them.
    await f.tb.host('h2').limitIncoming(20_000_000);
    try {
      const dir = join(shared, 'no-disk');
      mkdirSync(dir, { recursive: true });
      const job = await agent('h1').client.call('run', {
        command: workloadCommand('memory', { dir, mb: 128 }),
        env: JOB_ENV,
        name: 'no-disk',
      });
      await waitReady(dir, 20_000);
      const migrating = f.agents.migrate(job.id, 'h1', 'h2');
      await waitForMigrationState('h1', job.id, 'dumping');
      const mig = (await agent('h1').client.call('migrations-list', {})).migrations.find(
        (m) => m.jobId === job.id,
      )!;
      // Each host's /dev/shm is its own: seen through the host's root.
      const srcScratch = f.tb.host('h1').path(`/dev/shm/drover/h1/${mig.migrationId}/images`);
      const dstScratch = f.tb.host('h2').path(`/dev/shm/drover/h2/${mig.migrationId}/images`);
      const pages = (d: string): string[] =>
        existsSync(d) ? readdirSync(d).filter((f) => f.startsWith('pages-')) : [];
      // The pages arrive at the destination while the source still dumps...
      await waitFor(async () => pages(dstScratch).length > 0);
      assert.deepEqual(pages(srcScratch), [], 'pages were written on the source');
      for (const d of [srcScratch, dstScratch]) {
        assert.equal((await statfs(d)).type, TMPFS_MAGIC, `${d} is not on tmpfs`);
      }
      // ...and no image file exists under either agent's state directory (the disk).
      for (const h of ['h1', 'h2'])
        assert.deepEqual(imageFilesUnder(agent(h).srvPath('/srv/drover')), []);
      const rec = await migrating;
      assert.equal(rec.state, 'done');
      assert.equal(rec.note, null);
      assert.ok(rec.stats.pages > 128 * 256, `the dump wrote ${rec.stats.pages} pages`);
      assert.ok(rec.stats.bytes < 16 * 1024 * 1024, `the stream carried ${rec.stats.bytes} bytes`);
      await assertNoImagesLeft(rec.migrationId);
      for (const h of ['h1', 'h2'])
        assert.deepEqual(imageFilesUnder(agent(h).srvPath('/srv/drover')), []);
      assert.equal((await requestVerdict(dir, signaller('h2', job.id), 30_000)).ok, true);
      await agent('h2').client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
    } finally {
      await f.tb.host('h2').limitIncoming(null);
    }
  });
});

const TMPFS_MAGIC = 0x01021994;

/** CRIU image files (`*.img`) anywhere below `dir`. */
function imageFilesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.img')) out.push(p);
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

describe('migration faults leave the job running where it was', () => {
  /** Run a memory job on h1 and return a checker that it still runs there, intact. */
  async function victim(
    tag: string,
    mb = 64,
  ): Promise<{ job: JobInfo; dir: string; check: () => Promise<void> }> {
    const dir = join(shared, `victim-${tag}`);
    mkdirSync(dir, { recursive: true });
    const job = await agent('h1').client.call('run', {
      command: workloadCommand('memory', { dir, mb }),
      env: JOB_ENV,
      name: `victim-${tag}`,
    });
    await waitReady(dir, 20_000);
    const check = async (): Promise<void> => {
      assert.equal(await whereRunning(job.id), 'h1');
      const before = (await readHeartbeats(dir)).count;
      await sleep(200);
      assert.ok(
        (await readHeartbeats(dir)).count > before,
        'the job does not run after the failed migration',
      );
      const v = await requestVerdict(dir, signaller('h1', job.id), 30_000);
      assert.equal(v.ok, true, v.details);
      for (const h of ['h2', 'h3']) {
        const there = (await agent(h).client.call('list', {})).jobs.find((j) => j.id === job.id);
        assert.equal(there, undefined, `${h} kept a record of the job`);
      }
    };
    return { job, dir, check };
  }

  async function lastMigration(host: string, jobId: string): Promise<MigrationRecord> {
    const all = (await agent(host).client.call('migrations-list', {})).migrations.filter(
      (m) => m.jobId === jobId,
    );
    return all.sort((a, b) => a.startedAt.localeCompare(b.startedAt)).at(-1)!;
  }

  test('destination refuses in prepare (no capacity): typed error, nothing changes', async () => {
    await agent('h3').restartWith({ DROVER_RESERVE_MEMORY: String(1024 ** 4) });
    try {
      const { job, check } = await victim('capacity');
      await assert.rejects(f.agents.migrate(job.id, 'h1', 'h3'), (e: unknown) => {
        assert.ok(isDroverError(e, 'FAILED_PRECONDITION'), String(e));
        assert.match((e as Error).message, /not enough memory/);
        return true;
      });
      await check();
      assert.equal((await lastMigration('h1', job.id)).state, 'rolled-back');
      await agent('h1').client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
    } finally {
      await agent('h3').restartWith({});
    }
  });

  test('a corrupted stream is detected and rolls back', async () => {
    await agent('h1').restartWith({ DROVER_FAULT: 'corrupt-frame=3' });
    try {
      const { job, check } = await victim('corrupt');
      await assert.rejects(f.agents.migrate(job.id, 'h1', 'h2'), /CRC32 mismatch|checksum/i);
      await check();
      const rec = await lastMigration('h1', job.id);
      assert.equal(rec.state, 'rolled-back');
      await assertNoImagesLeft(rec.migrationId);
      await agent('h1').client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
    } finally {
      await agent('h1').restartWith({});
    }
  });

  test('a failed restore on the destination rolls back', async () => {
    // The job holds a shared file; it disappears once the dump is done, while the job's
    // directory (32 MB of it, through a slowed stream) is in flight, so CRIU on the destination
    // cannot reopen it.
    await agent('h1').restartWith({ DROVER_FAULT: 'throttle=8000000' });
    try {
      const dir = join(shared, 'restore-fails');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'data.bin'), 'x'.repeat(64));
      const { job, check } = await victim('restore-fails');
      const holder = await agent('h1').client.call('run', {
        command: [
          '/bin/sh',
          '-c',
          'head -c 32000000 /dev/zero > "$DROVER_JOB_DIR/blob"; exec /usr/bin/python3 -c "$0"',
          `import time\nf=open("${dir}/data.bin")\nb=bytearray(64 << 20)\nwhile True: time.sleep(0.1)`,
        ],
        name: 'holder',
      });
      await sleep(300);
      await sleep(500);
      const migrating = f.agents.migrate(holder.id, 'h1', 'h2');
      await waitForMigrationState('h1', holder.id, 'transferring');
      rmSync(join(dir, 'data.bin'));
      await assert.rejects(migrating, /RESTORE failed/);
      assert.equal(await whereRunning(holder.id), 'h1');
      const rec = await lastMigration('h1', holder.id);
      assert.equal(rec.state, 'rolled-back');
      await assertNoImagesLeft(rec.migrationId);
      assert.equal((await lastMigration('h2', holder.id)).state, 'aborted');
      assert.equal(
        (await agent('h2').client.call('list', {})).jobs.find((j) => j.id === holder.id),
        undefined,
      );
      await check();
      await agent('h1').client.call('signal', { jobId: holder.id, signal: 'SIGKILL' });
      await agent('h1').client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
    } finally {
      await agent('h1').restartWith({});
    }
  });

  test('destination agent killed while the pages are in flight', async () => {
    await f.tb.host('h2').limitIncoming(20_000_000);
    try {
      const { job, check } = await victim('dest-killed', 128);
      const migrating = f.agents.migrate(job.id, 'h1', 'h2');
      await waitForMigrationState('h1', job.id, 'dumping');
      await sleep(500);
      await agent('h2').kill();
      await assert.rejects(migrating);
      await agent('h2').start();
      await check();
      const rec = await lastMigration('h1', job.id);
      assert.equal(rec.state, 'rolled-back');
      await waitFor(async () => (await lastMigration('h2', job.id))?.state === 'aborted');
      await assertNoImagesLeft(rec.migrationId);
      await agent('h1').client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
    } finally {
      await f.tb.host('h2').limitIncoming(null);
    }
  });

  test('link cut while the pages are in flight: the stalled page connection is cut, the job thaws', async () => {
    await f.tb.host('h3').limitIncoming(20_000_000);
    try {
      const { job, check } = await victim('link-cut', 128);
      const migrating = f.agents.migrate(job.id, 'h1', 'h3');
      await waitForMigrationState('h1', job.id, 'dumping');
      await sleep(500);
      await f.tb.host('h3').cutLink();
      try {
        await assert.rejects(migrating);
      } finally {
        await f.tb.host('h3').restoreLink();
      }
      await check();
      const rec = await lastMigration('h1', job.id);
      assert.equal(rec.state, 'rolled-back');
      assert.match(rec.error?.message ?? '', /made no progress/);
      // h3 gives up on its own: no stream ever came (its prepared migration lapses).
      await waitFor(async () => (await lastMigration('h3', job.id))?.state === 'aborted', 90_000);
      await assertNoImagesLeft(rec.migrationId);
      await agent('h1').client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
    } finally {
      await f.tb.host('h3').limitIncoming(null);
    }
  });

  test('source agent killed while the pages are in flight: when it comes back the job runs on exactly one host', async () => {
    await f.tb.host('h2').limitIncoming(20_000_000);
    const { job, check } = await victim('source-killed', 128);
    // The request dies with the agent; its reply is never awaited.
    void f.agents.migrate(job.id, 'h1', 'h2', { timeoutMs: 60_000 }).catch(() => undefined);
    await waitForMigrationState('h1', job.id, 'dumping');
    await sleep(500);
    await agent('h1').kill();
    await agent('h1').restartWith({});
    await f.tb.host('h2').limitIncoming(null);
    await waitFor(async () => (await lastMigration('h1', job.id)).state === 'rolled-back', 30_000);
    await check();
    await agent('h1').client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
  });

  test('pre-copy says why it is not available here', async () => {
    const { job, check } = await victim('modes');
    await assert.rejects(
      f.agents.migrate(job.id, 'h1', 'h2', { mode: 'pre-copy' }),
      (e: unknown) => {
        assert.ok(isDroverError(e, 'FAILED_PRECONDITION'));
        assert.match((e as Error).message, /memory tracking/);
        return true;
      },
    );
    await check();
    await agent('h1').client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
  });
});

async function waitForMigrationState(
  host: string,
  jobId: string,
  state: string,
  timeoutMs = 30_000,
): Promise<void> {
  await waitFor(async () => {
    const all = (await agent(host).client.call('migrations-list', {})).migrations.filter(
      (m) => m.jobId === jobId,
    );
    return all.some((m) => m.state === state || m.timeline.some((t) => t.phase === state));
  }, timeoutMs);
}

function signaller(host: string, jobId: string): (sig: NodeJS.Signals) => void {
  return signalVia(agent(host), jobId);
}

function innerPids(host: string, jobId: string): Promise<number[]> {
  return innerPidsVia(agent(host), jobId);
}
