/**
 * The source side of a migration, phase by phase, with the world below it faked: the order of
 * the phases, where the pages go, and the one rollback exit in each way a move can fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError, ErrorCode } from '@drover/common';
import { startTicks } from '@drover/native';
import {
  resolveCheckpointOptions,
  type AgentReplies,
  type MigrationRecord,
} from '@drover/protocol';
import { dumpNetworkLock } from '../job-image.js';
import type { JobRecord } from '../job-store.js';
import { SourceMigration } from './source.js';
import type { SourceWorld } from './source-world.js';

/** A job that is "alive": this test process stands in for its root. */
function job(net: 'job' | 'host' = 'job'): JobRecord {
  return {
    id: 'job-a',
    name: 'a',
    host: 'h1',
    kind: 'namespaced',
    state: 'running',
    command: ['/bin/true'],
    cwd: '/',
    rootPid: process.pid,
    mainPid: process.pid,
    mainPidInside: 1,
    startedAt: '2026-12-01T00:00:00Z',
    exitedAt: null,
    exitCode: null,
    signal: null,
    memoryLimitBytes: null,
    jobDir: '/srv/drover/jobs/job-a',
    stdoutPath: '/srv/drover/jobs/job-a/stdout.log',
    stderrPath: '/srv/drover/jobs/job-a/stderr.log',
    restoredFrom: null,
    note: null,
    rootStartTicks: startTicks(process.pid),
    env: {},
    shellJob: false,
    hostname: 'job-a',
    checkpointOptions: {},
    until: 'main',
    mainPidfile: null,
    tty: false,
    network:
      net === 'job'
        ? {
            mode: 'job',
            address: '10.78.0.2',
            prefixLength: 24,
            gateway: null,
            mac: '02:44:0a:4e:00:02',
          }
        : { mode: 'host' },
  };
}

interface Fake {
  world: SourceWorld;
  /** What happened, in order. */
  log: string[];
  dumps: Record<string, unknown>[];
  calls: { op: string; req: Record<string, unknown> }[];
}

/** A world that does what it is told; `fail` names steps that throw. */
function fake(
  opts: {
    fail?: string[];
    status?: MigrationRecord['state'] | 'unreachable';
    leftoverPageBytes?: number;
    /** The page connection stalls: the watchdog cuts it and CRIU's side fails. */
    stall?: boolean;
  } = {},
): Fake {
  const log: string[] = [];
  const dumps: Record<string, unknown>[] = [];
  const calls: { op: string; req: Record<string, unknown> }[] = [];
  const step = (name: string): void => {
    log.push(name);
    if (opts.fail?.includes(name)) throw new DroverError(ErrorCode.Internal, `injected: ${name}`);
  };
  const prepared: AgentReplies['migrate-prepare'] = {
    streamHost: '10.77.0.12',
    streamPort: 7070,
    token: 't'.repeat(64),
    scratchDir: '/dev/shm/x',
    pages: { host: '10.77.0.12', port: 7200 },
    pageFrom: '10.77.0.12',
  };
  const world: SourceWorld = {
    hostId: 'h1',
    advertiseHost: '10.77.0.11',
    call: (async (_host: string, op: string, req: Record<string, unknown>) => {
      calls.push({ op, req });
      step(op);
      if (op === 'migrate-prepare') return prepared;
      if (op === 'migrate-status') {
        if (opts.status === 'unreachable')
          throw new DroverError(ErrorCode.Unavailable, 'no answer');
        return { state: opts.status ?? 'running' };
      }
      return {};
    }) as SourceWorld['call'],
    pageTls: (side) => ({
      caFile: 'ca',
      certFile: 'c',
      keyFile: 'k',
      ...(side === 'server' ? { noCnVerify: true } : {}),
    }),
    dump: async (o, call) => {
      dumps.push(o as unknown as Record<string, unknown>);
      if (call?.session) log.push('dump-in-started-criu');
      step(o.lazyPages ? 'dump-lazy' : 'dump');
      await new Promise((r) => setTimeout(r, 1));
      if (opts.stall && !o.lazyPages) throw new DroverError(ErrorCode.Criu, 'DUMP failed');
      // As CRIU: post-dump once the images are written, before a lazy dump serves its pages.
      await call?.hooks?.['post-dump']?.({ script: 'post-dump' } as never);
      if (o.lazyPages) {
        await call?.hooks?.['status-ready']?.({ script: 'status-ready' } as never);
        await new Promise((r) => setTimeout(r, 5));
        step('lazy-served');
      }
      return { logPath: '/x/dump.log', durationMs: 1 };
    },
    startCriu: () => {
      log.push('criu-started');
      return { pid: 99, alive: true, kill: async () => void log.push('criu-killed') } as never;
    },
    openStream: async () => {
      step('stream');
      return {
        keepAlive: async <T>(work: Promise<T>) => {
          log.push('keepalive');
          const out = await work;
          log.push('keepalive-end');
          return out;
        },
        sendDirectory: async () => (step('send'), { files: 3, bytes: 1000 }),
        finish: async () => (step('finish'), { job: {}, restoreMs: 5 }),
        abort: async () => void log.push('stream-abort'),
      };
    },
    cgroup: async () => ({
      freezeForCheckpoint: async () => {
        step('freeze');
        return {
          release: async ({ thaw }: { thaw: boolean }) => void log.push(thaw ? 'thaw' : 'unguard'),
        } as never;
      },
      destroy: async () => void log.push('destroy'),
      memoryUsage: async () => 0,
      paths: { freezer: undefined } as never,
    }),
    network: {
      quiesce: async () => (step('quiesce'), { waitedMs: 1, inFlight: 0 }),
      lock: async () => step('lock'),
      reopen: async () => void log.push('reopen'),
      release: async () => void log.push('release-link'),
    },
    pages: {
      freePort: async () => 7300,
      admit: async (port, peer) => void log.push(`admit ${peer}:${port}`),
      close: async (port, peer) => void log.push(`close ${peer}:${port}`),
      localAddressToward: async () => '10.77.0.11',
      watch: (_c, _until, onCut) => {
        if (opts.stall) onCut('the page connection to 10.77.0.12 made no progress for 10 s');
      },
    },
    scratch: {
      make: async () => ({ dir: '/dev/shm/mig', onDisk: false }),
      remove: async () => void log.push('scratch-removed'),
    },
    images: {
      plan: async (j) => {
        const criu = resolveCheckpointOptions(j.checkpointOptions, undefined, {
          ownNetwork: j.network.mode === 'job',
          largestGhostBytes: 0,
        });
        const inHostNetwork = j.network.mode === 'host';
        const networkLock = dumpNetworkLock({ inHostNetwork, tcpEstablished: criu.tcpEstablished });
        return { mounts: [], externals: ['mnt[]'], shellJob: false, criu, networkLock };
      },
      addJobFiles: async () => (step('job-files'), 10),
      stats: async () => ({ pagesWritten: 42, shpagesWritten: 0, pagesLazy: 7, frozenMs: 1 }),
      pageBytes: async () => opts.leftoverPageBytes ?? 0,
      bytes: async () => 1000,
    },
    jobs: {
      save: async () => undefined,
      event: () => undefined,
      release: () => void log.push('unwatch'),
      pids: () => [1],
      cpuFlags: async () => [],
    },
    records: {
      save: async () => undefined,
      saveTicket: async () => undefined,
      ticket: async () => 'x'.repeat(32),
    },
    progress: () => undefined,
    log: { info: () => undefined, warn: () => undefined },
  };
  return { world, log, dumps, calls };
}

const TICKET = { destination: 'h2', ticket: 'x'.repeat(32) };
const move = (
  f: Fake,
  mode: 'stop-copy' | 'post-copy' = 'stop-copy',
  net: 'job' | 'host' = 'job',
) =>
  new SourceMigration(f.world, job(net), TICKET, {
    mode,
    memoryBytes: 0,
    destinationAddress: '10.77.0.12',
  }).run();
const before = (log: string[], a: string, b: string): void =>
  assert.ok(
    log.indexOf(a) >= 0 && log.indexOf(a) < log.indexOf(b),
    `${a} before ${b}: ${log.join(' ')}`,
  );

test("stop-copy: the pages go to the destination's page server over TLS; the original goes only after the job runs there", async () => {
  const f = fake();
  const rec = await move(f);
  assert.equal(rec.state, 'done');
  const prepare = f.calls.find((c) => c.op === 'migrate-prepare')!;
  assert.equal(prepare.req['pageFrom'], '10.77.0.11', 'the destination admits our address');
  assert.deepEqual(f.dumps[0]!['pageServer'], { address: '10.77.0.12', port: 7200 });
  assert.deepEqual(
    f.dumps[0]!['tls'],
    { caFile: 'ca', certFile: 'c', keyFile: 'k' },
    "the client checks the server's name",
  );
  assert.equal(f.dumps[0]!['tcpEstablished'], true);
  for (const [a, b] of [
    ['migrate-prepare', 'quiesce'],
    ['quiesce', 'freeze'],
    ['freeze', 'lock'],
    ['lock', 'dump'],
    ['dump', 'job-files'],
    ['job-files', 'send'],
    ['send', 'finish'],
    ['finish', 'release-link'],
    ['release-link', 'unguard'],
    ['unguard', 'destroy'],
    ['destroy', 'migrate-commit'],
  ] as const)
    before(f.log, a, b);
  assert.equal(rec.stats.pages, 42);
  assert.ok(!f.log.includes('thaw') && !f.log.includes('reopen'));
});

test('what the job was started with travels: checkpoint options, lifetime, pidfile, terminal', async () => {
  const f = fake();
  const j = {
    ...job(),
    checkpointOptions: { fileLocks: false },
    until: 'all' as const,
    mainPidfile: '/run/d.pid',
    tty: true,
  };
  const rec = await new SourceMigration(f.world, j, TICKET, {
    mode: 'stop-copy',
    memoryBytes: 0,
    destinationAddress: '10.77.0.12',
  }).run();
  assert.equal(rec.state, 'done');
  const sent = f.calls.find((c) => c.op === 'migrate-prepare')!.req['job'] as Record<
    string,
    unknown
  >;
  assert.deepEqual(sent['checkpointOptions'], { fileLocks: false });
  assert.equal(sent['until'], 'all');
  assert.equal(sent['mainPidfile'], '/run/d.pid');
  assert.equal(sent['tty'], true);
});

test("a job on the host's network is neither quiesced nor locked", async () => {
  const f = fake();
  assert.equal((await move(f, 'stop-copy', 'host')).state, 'done');
  assert.ok(!f.log.includes('quiesce') && !f.log.includes('lock'));
  // Nor does CRIU lock it: with no connection to hold, its nftables lock is an empty table
  // made and deleted in the frozen window (and deleted once more by the restore).
  assert.equal(f.dumps[0]!['networkLock'], 'skip');
});

test("CRIU locks a job's own network namespace, and the TCP connections it dumps", async () => {
  const own = fake();
  await move(own, 'stop-copy', 'job');
  assert.equal(own.dumps[0]!['networkLock'], 'nftables');
  const tcp = fake();
  const j = { ...job('host'), checkpointOptions: { tcpEstablished: true } };
  await new SourceMigration(tcp.world, j, TICKET, {
    mode: 'post-copy',
    memoryBytes: 0,
    destinationAddress: '10.77.0.12',
  }).run();
  assert.equal(tcp.dumps[0]!['tcpEstablished'], true);
  assert.equal(tcp.dumps[0]!['networkLock'], 'nftables');
});

for (const step of ['dump', 'job-files', 'send'] as const) {
  test(`a failure in ${step} rolls back: the destination aborts, the network reopens, the original thaws`, async () => {
    const f = fake({ fail: [step] });
    await assert.rejects(move(f), /injected/);
    for (const s of ['migrate-abort', 'reopen', 'thaw', 'scratch-removed'])
      assert.ok(f.log.includes(s), `${s}: ${f.log.join(' ')}`);
    assert.ok(!f.log.includes('destroy') && !f.log.includes('release-link'));
    before(f.log, 'reopen', 'thaw');
  });
}

test('the destination refusing prepare changes nothing: the job was never frozen', async () => {
  const f = fake({ fail: ['migrate-prepare'] });
  await assert.rejects(move(f), /injected/);
  assert.ok(!f.log.includes('freeze') && !f.log.includes('quiesce') && !f.log.includes('dump'));
});

for (const mode of ['stop-copy', 'post-copy'] as const) {
  test(`${mode}: the dump runs in a CRIU started before the freeze`, async () => {
    const f = fake();
    await move(f, mode);
    before(f.log, 'criu-started', 'migrate-prepare');
    before(f.log, 'freeze', 'dump-in-started-criu');
    assert.ok(!f.log.includes('criu-killed'), f.log.join(' '));
  });
}

test('a CRIU started for a dump that never ran is killed', async () => {
  const f = fake({ fail: ['migrate-prepare'] });
  await assert.rejects(move(f), /injected/);
  before(f.log, 'criu-started', 'criu-killed');
  const g = fake({ fail: ['freeze'] });
  await assert.rejects(move(g), /injected/);
  assert.ok(g.log.includes('criu-killed') && !g.log.includes('dump-in-started-criu'));
});

test('no answer after DONE: a destination that runs the job gets it committed', async () => {
  const f = fake({ fail: ['finish'], status: 'running' });
  const rec = await move(f);
  assert.equal(rec.state, 'done');
  assert.ok(f.log.includes('destroy') && !f.log.includes('thaw'));
});

test('no answer after DONE and nobody to ask: in doubt, the original stays frozen and locked', async () => {
  const f = fake({ fail: ['finish'], status: 'unreachable' });
  const m = new SourceMigration(f.world, job(), TICKET, {
    mode: 'stop-copy',
    memoryBytes: 0,
    destinationAddress: '10.77.0.12',
  });
  await assert.rejects(m.run(), /injected/);
  assert.equal(m.rec.state, 'in-doubt', f.log.join(' '));
  for (const s of ['thaw', 'reopen', 'destroy'])
    assert.ok(!f.log.includes(s), `${s}: ${f.log.join(' ')}`);
});

test('post-copy: our lazy page server admits only the destination, and the original goes once every page is pulled', async () => {
  const f = fake();
  const rec = await move(f, 'post-copy');
  assert.equal(rec.state, 'done');
  const prepare = f.calls.find((c) => c.op === 'migrate-prepare')!;
  assert.deepEqual(prepare.req['pageServer'], { host: '10.77.0.11', port: 7300 });
  before(f.log, 'migrate-prepare', 'admit 10.77.0.12:7300');
  before(f.log, 'admit 10.77.0.12:7300', 'dump-lazy');
  assert.deepEqual(f.dumps[0]!['tls'], {
    caFile: 'ca',
    certFile: 'c',
    keyFile: 'k',
    noCnVerify: true,
  });
  before(f.log, 'finish', 'lazy-served');
  before(f.log, 'lazy-served', 'destroy');
  assert.ok(f.log.includes('close 10.77.0.12:7300'), 'the port is closed again');
  assert.equal(rec.stats.pages, 7);
});

test('post-copy whose images hold the memory is refused and rolled back, not copied silently', async () => {
  const f = fake({ leftoverPageBytes: 512 * 1024 * 1024 });
  await assert.rejects(move(f, 'post-copy'), /lazy pages did not take/);
  assert.ok(f.log.includes('thaw') && !f.log.includes('send'));
});

test('a stalled page connection is cut: the dump fails, says why, and the job thaws where it was', async () => {
  const f = fake({ stall: true });
  await assert.rejects(move(f), (e: unknown) => {
    assert.match((e as Error).message, /made no progress for 10 s/);
    return true;
  });
  assert.ok(f.log.includes('thaw') && f.log.includes('migrate-abort'));
});

test('post-copy: pages that stop while the destination cannot be told leave the original frozen (in doubt), never running twice', async () => {
  const f = fake({ fail: ['lazy-served', 'migrate-abort'] });
  const m = new SourceMigration(f.world, job(), TICKET, {
    mode: 'post-copy',
    memoryBytes: 0,
    destinationAddress: '10.77.0.12',
  });
  await assert.rejects(m.run(), /injected: lazy-served/);
  assert.equal(m.rec.state, 'in-doubt', f.log.join(' '));
  for (const s of ['thaw', 'reopen', 'destroy'])
    assert.ok(!f.log.includes(s), `${s}: ${f.log.join(' ')}`);
});

test('post-copy: pages that stop, with the destination told to drop its copy, thaw the original', async () => {
  const f = fake({ fail: ['lazy-served'] });
  await assert.rejects(move(f, 'post-copy'), /injected: lazy-served/);
  assert.ok(f.log.includes('migrate-abort') && f.log.includes('thaw'));
  before(f.log, 'migrate-abort', 'thaw');
});

test('post-copy: the stream opens before the freeze and is kept alive while frozen and dumped', async () => {
  const f = fake();
  const rec = await move(f, 'post-copy');
  assert.equal(rec.state, 'done');
  for (const [a, b] of [
    ['migrate-prepare', 'stream'],
    ['stream', 'quiesce'],
    ['keepalive', 'freeze'],
    ['dump-lazy', 'keepalive-end'],
    ['keepalive-end', 'send'],
  ] as const)
    before(f.log, a, b);
  assert.equal(f.log.filter((l) => l === 'stream').length, 1, 'one stream');
  const steps = rec.timeline.map((t) => t.phase);
  for (const s of ['stream-open', 'freezer', 'images-ready', 'result'])
    assert.ok(steps.includes(s), `${s} on the timeline: ${steps.join(' ')}`);
});

test('stop-copy: the stream opens before the freeze and is kept alive while the pages go', async () => {
  const f = fake();
  assert.equal((await move(f)).state, 'done');
  before(f.log, 'stream', 'quiesce');
  before(f.log, 'keepalive', 'freeze');
  before(f.log, 'dump', 'keepalive-end');
  before(f.log, 'keepalive-end', 'send');
});

for (const [mode, step] of [
  ['post-copy', 'freeze'],
  ['post-copy', 'lock'],
  ['post-copy', 'dump-lazy'],
  ['post-copy', 'job-files'],
  ['stop-copy', 'freeze'],
  ['stop-copy', 'dump'],
  ['stop-copy', 'job-files'],
] as const) {
  test(`${mode}: a failure in ${step} with the stream open drops the stream and rolls back`, async () => {
    const f = fake({ fail: [step] });
    await assert.rejects(move(f, mode), /injected/);
    for (const s of ['stream-abort', 'migrate-abort', 'reopen', 'scratch-removed'])
      assert.ok(f.log.includes(s), `${s}: ${f.log.join(' ')}`);
    before(f.log, 'stream-abort', 'migrate-abort');
    assert.ok(!f.log.includes('send') && !f.log.includes('destroy'), f.log.join(' '));
    // The freezer took unless it was the step that failed: then it is thawed.
    if (step !== 'freeze') before(f.log, 'reopen', 'thaw');
  });
}

for (const mode of ['post-copy', 'stop-copy'] as const) {
  test(`${mode}: a stream that cannot open changes nothing: the job was never frozen`, async () => {
    const f = fake({ fail: ['stream'] });
    await assert.rejects(move(f, mode), /injected: stream/);
    assert.ok(!f.log.includes('freeze') && !f.log.includes('quiesce'), f.log.join(' '));
    assert.ok(f.log.includes('migrate-abort'));
  });
}
