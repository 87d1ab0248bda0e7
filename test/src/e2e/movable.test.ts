/**
 * Every process CRIU can move, Drover moves: one small program of ours per class of process that
 * used to stay behind (test/workloads/movable: file locks and a lease, a large unlinked file, an
 * unlinked file with another link, a pty pair and a job on a terminal, a BPF map, a per-netns
 * sysctl, daemonising launchers, a tree whose children come back in another order). Each moves
 * h1 → h2 → h1 and checks its own state after every hop; `drover signal` must reach its main
 * process (and only it) after every hop, and `drover stop` ends it through its main process.
 * Turning an option off shows what it is for: the move is refused and the job runs on where it
 * was, whole.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { AgentReplies, ClusterJob, HostStatus } from '@drover/protocol';
import { CLI_MAIN } from '../cluster/cli.js';
import { ClusterFixture } from '../cluster/fixture.js';
import { WORKLOADS_DIR } from '../workloads/mod.js';
import { waitForValue } from './helpers.js';

const run = promisify(execFile);
const PROGRAMS = join(WORKLOADS_DIR, 'movable');
const PY = '/usr/bin/python3';

let f: ClusterFixture;

/** The bound on an incoming restore (`--restore-timeout-ms`), short for the shared-lock test. */
const RESTORE_TIMEOUT_MS = 20_000;

before(async () => {
  f = await ClusterFixture.start({
    hosts: 2,
    agents: { extraArgs: ['--restore-timeout-ms', String(RESTORE_TIMEOUT_MS)] },
  });
});

after(async () => {
  await f?.stop();
});

/** One running program: its job, and its PID inside the job as it said in READY. */
interface Probe {
  job: ClusterJob;
  name: string;
  /** The main process's PID inside the job (from its READY line). */
  pid: number;
  /** What READY said after the PID. */
  info: string;
  /** Checks asked for so far. */
  n: number;
}

const logs = async (jobId: string): Promise<string> =>
  (await f.json<{ data: string }>(['logs', jobId, '--bytes', '1048576'])).data.replaceAll('\r', '');

const inspect = (jobId: string): Promise<AgentReplies['inspect']> =>
  f.json<AgentReplies['inspect']>(['inspect', jobId]);

/**
 * The job as `drover jobs --all` lists it where it is now or where it ended (a host it left
 * keeps a `migrated` record; `--all`: ended jobs too). Exactly one such record.
 */
async function listed(jobId: string): Promise<ClusterJob> {
  const { jobs } = await f.json<{ jobs: ClusterJob[] }>(['jobs', '--all']);
  const mine = jobs.filter((x) => x.id === jobId && x.state !== 'migrated');
  assert.equal(mine.length, 1, `drover jobs --all lists ${jobId} as ${JSON.stringify(mine)}`);
  return mine[0]!;
}

/** `drover run --host h1 FLAGS -- python3 movable/NAME.py ARGS`, once it said READY. */
async function start(name: string, args: string[] = [], flags: string[] = []): Promise<Probe> {
  const job = await f.json<ClusterJob>([
    'run',
    '--host',
    'h1',
    ...flags,
    '--',
    PY,
    join(PROGRAMS, `${name}.py`),
    ...args,
  ]);
  return ready(job, name);
}

/** Wait for the READY line of `name` in the job's log. */
async function ready(job: ClusterJob, name: string): Promise<Probe> {
  const m = await waitForValue(async () => {
    const text = await logs(job.id);
    assert.doesNotMatch(text, /Traceback/, `${name} crashed:\n${text}`);
    return new RegExp(`^READY ${name} (\\d+) ?(.*)$`, 'm').exec(text) ?? undefined;
  }, 20_000);
  return { job, name, pid: Number(m[1]), info: m[2] ?? '', n: 0 };
}

/**
 * `drover signal JOB SIGUSR1`: the program checks itself and says OK from its main process.
 * Nothing else of the job may have received it (programs print STRAY when they do).
 */
async function check(p: Probe, where: string): Promise<void> {
  const r = await f.drover(['signal', p.job.id, 'SIGUSR1']);
  assert.equal(r.code, 0, `signal ${p.name} ${where}: ${r.stderr}`);
  p.n++;
  const line = await waitForValue(async () => {
    const text = await logs(p.job.id);
    const m = new RegExp(`^(OK|FAIL) ${p.name} ${p.n} (\\d+)(.*)$`, 'm').exec(text);
    return m ?? undefined;
  }, 20_000);
  assert.equal(line[1], 'OK', `${p.name} ${where}: ${line[0]}`);
  assert.equal(Number(line[2]), p.pid, `${p.name} ${where}: another process answered`);
  assert.doesNotMatch(await logs(p.job.id), /^STRAY/m, `${p.name} ${where}: the signal strayed`);
}

/** `drover migrate JOB --to H` succeeds; the job's main process is the same one there. */
async function hop(p: Probe, to: string, main: number | null = p.pid): Promise<void> {
  const op = await f.json<{ state: string; error: unknown }>(['migrate', p.job.id, '--to', to]);
  assert.equal(op.state, 'done', `migrate ${p.name} → ${to}: ${JSON.stringify(op.error)}`);
  const j = await listed(p.job.id);
  assert.equal(j.host, to);
  assert.equal(j.mainPidInside, main, `${p.name} on ${to}: drover jobs shows another main process`);
}

/** h1 → h2 → h1, checking before, between and after. */
async function roundTrip(p: Probe, main: number | null = p.pid): Promise<void> {
  await check(p, 'on h1');
  await hop(p, 'h2', main);
  await check(p, 'after h1 → h2');
  await hop(p, 'h1', main);
  await check(p, 'after h2 → h1');
}

/** `drover stop`: the main process says TERM and the job ends with its status. */
async function stopEnds(p: Probe, exitCode = 0): Promise<ClusterJob> {
  const r = await f.drover(['stop', p.job.id]);
  assert.equal(r.code, 0, `stop ${p.name}: ${r.stderr}${r.stdout}`);
  const j = await waitForValue(async () => {
    const x = await listed(p.job.id);
    return x.state === 'exited' ? x : undefined;
  }, 20_000);
  assert.match(await logs(p.job.id), new RegExp(`^TERM ${p.name} ${p.pid}$`, 'm'));
  assert.equal(j.exitCode, exitCode, `${p.name}: ${JSON.stringify(j)}`);
  return j;
}

/** `drover attach JOB` with `line` on its standard input: the program reads it on its terminal. */
async function typed(p: Probe, line: string): Promise<void> {
  const child = spawn(
    process.execPath,
    [CLI_MAIN, '--nats', f.urls.join(','), 'attach', p.job.id],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NODE_TEST_CONTEXT: undefined },
    },
  );
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout.resume();
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  child.stdin.write(`${line}\n`);
  await waitForValue(async () =>
    new RegExp(`^GOT ${line}$`, 'm').test(await logs(p.job.id)) ? true : undefined,
  );
  child.stdin.end();
  assert.equal(await exited, 0, `drover attach: ${err}`);
}

/** A move the job's options do not allow: refused, and the job runs on h1, whole. */
async function refused(p: Probe, criuSays: RegExp): Promise<void> {
  const r = await f.drover(['migrate', p.job.id, '--to', 'h2']);
  assert.notEqual(r.code, 0, `migrate ${p.name} should have failed`);
  assert.match(r.stdout + r.stderr, criuSays);
  const j = await listed(p.job.id);
  assert.equal(j.host, 'h1');
  assert.equal(j.state, 'running');
  await check(p, 'after the refused move');
}

describe('checkpoint options', () => {
  test('file locks and a lease move (--file-locks, on by default); without it the move is refused', async () => {
    const p = await start('locks');
    const i = await inspect(p.job.id);
    assert.equal(i.effectiveCheckpointOptions?.fileLocks, true);
    await roundTrip(p);
    await stopEnds(p);

    const off = await start('locks', [], ['--checkpoint-opt', 'no-file-locks']);
    assert.deepEqual((await inspect(off.job.id)).checkpointOptions, { fileLocks: false });
    await refused(off, /file.locks/i);
    await stopEnds(off);
  });

  test('locks on storage both hosts share: the restore that waits for them is stopped at its bound; the job runs on h1, whole', async () => {
    // The frozen original keeps its locks until the destination runs the job, and CRIU takes
    // them back with blocking calls: without the bound the job would stay frozen for good.
    const dir = join(f.tb.sharedDir, `locks-${Date.now()}`);
    mkdirSync(dir, { recursive: true });
    try {
      const p = await start('locks', [dir]);
      await refused(p, /restore did not finish within 20 s/);
      await stopEnds(p);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a large unlinked open file moves: the ghost limit is sized to the job', async () => {
    const p = await start('ghost', ['8']);
    const i = await inspect(p.job.id);
    assert.ok(
      (i.effectiveCheckpointOptions?.ghostLimitBytes ?? 0) >= 8 * 1024 * 1024,
      JSON.stringify(i.effectiveCheckpointOptions),
    );
    await roundTrip(p);
    await stopEnds(p);

    const small = await start('ghost', ['8'], ['--checkpoint-opt', 'ghost-limit=1M']);
    await refused(small, /ghost file|increase limit/i);
    await stopEnds(small);
  });

  test('an open file whose name is gone but has another link moves (--link-remap)', async () => {
    const p = await start('linkremap');
    await roundTrip(p);
    await stopEnds(p);

    const off = await start('linkremap', [], ['--checkpoint-opt', 'no-link-remap']);
    await refused(off, /link.remap/i);
    await stopEnds(off);
  });

  test('options off the list are refused before anything runs', async () => {
    for (const opt of ['shell-job', 'ghost-limit=huge', 'file-locks=maybe']) {
      const r = await f.drover(['run', '--host', 'h1', '--checkpoint-opt', opt, '--', 'true']);
      assert.equal(r.code, 2, `${opt}: ${r.stderr}`);
      assert.match(r.stderr, /checkpoint option/);
    }
  });

  test("a sysctl of the job's own network namespace moves with it", async () => {
    const p = await start('sysctl');
    await roundTrip(p);
    await stopEnds(p);
  });

  test('a BPF map moves, where CRIU is built with libbpf', async (t) => {
    const { hosts } = await f.json<{ hosts: HostStatus[] }>(['hosts']);
    const abilities = await waitForValue(async () => {
      const h = (await f.json<{ hosts: HostStatus[] }>(['hosts'])).hosts;
      return h.every((x) => x.info.criu.abilities)
        ? h.map((x) => x.info.criu.abilities!)
        : undefined;
    }, 60_000);
    assert.equal(abilities.length, hosts.length);
    const wide = await f.drover(['hosts', '--wide']);
    assert.match(wide.stdout, /ABILITIES/);
    if (!abilities.every((a) => a.build.includes('libbpf'))) {
      t.skip('CRIU here was built without libbpf (deploy/setup-host.sh builds it with)');
      return;
    }
    assert.match(wide.stdout, /libbpf/);
    const p = await start('bpfmap');
    await roundTrip(p);
    await stopEnds(p);
  });
});

describe("a job's own terminals", () => {
  test('a pty pair keeps its number, settings and queued bytes, next to another job with the same number', async () => {
    // A job on h2 holds pts/0 of its own devpts: the mover's pts/0 must not collide with it.
    const other = await start('pty');
    await hop(other, 'h2');
    const p = await start('pty');
    assert.equal(p.info, '/dev/pts/0', 'a job numbers its terminals from 0');
    assert.equal(other.info, '/dev/pts/0');
    await roundTrip(p);
    await check(other, 'beside the moved job');
    await stopEnds(p);
    await stopEnds(other);
  });

  test("drover run -t: the command's stdio is a terminal of the job, moved with it; drover attach types on it", async () => {
    const p = await start('tty', [], ['-t']);
    assert.equal(p.info, '/dev/pts/0');
    assert.equal((await inspect(p.job.id)).tty, true);
    await typed(p, 'before the move');
    await roundTrip(p);
    await typed(p, 'after two moves');
    await stopEnds(p);
    // A job without a terminal takes no input.
    const plain = await start('pty');
    const r = await f.drover(['attach', plain.job.id]);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /no terminal/);
    await stopEnds(plain);
  });
});

describe('the main process', () => {
  test('a tree whose children come back in another order: signal and stop reach the main process', async () => {
    const p = await start('reorder');
    await roundTrip(p);
    await stopEnds(p);

    // The issue's own case: the main process execs, its sibling was orphaned to the init.
    const sh = await f.json<ClusterJob>([
      'run',
      '--host',
      'h1',
      '--',
      '/bin/sh',
      '-c',
      '(sleep 1000 &); exec sleep 2000',
    ]);
    const first = await waitForValue(async () => {
      const j = await listed(sh.id);
      return j.mainPidInside ?? undefined;
    });
    for (const to of ['h2', 'h1', 'h2']) {
      const op = await f.json<{ state: string }>(['migrate', sh.id, '--to', to]);
      assert.equal(op.state, 'done');
      const i = await inspect(sh.id);
      assert.equal(i.mainPidInside, first, `after the move to ${to}`);
      const main = i.processes.find((x) => x.pid === i.mainPid);
      assert.deepEqual(main?.cmdline, ['sleep', '2000'], `after the move to ${to}`);
      assert.ok(i.processes.some((x) => x.cmdline.join(' ') === 'sleep 1000'));
    }
    // SIGTERM reaches `sleep 2000` alone: it dies of it and the job ends with its status (had it
    // gone to the init, the wrapper would have died before recording one).
    const r = await f.drover(['signal', sh.id, 'SIGTERM']);
    assert.equal(r.code, 0, r.stderr);
    const ended = await waitForValue(async () => {
      const j = await listed(sh.id);
      return j.state === 'exited' ? j : undefined;
    });
    assert.equal(ended.signal, 'SIGTERM', JSON.stringify(ended));
    assert.equal(ended.host, 'h2');
  });

  test('stop after a single move reaches the main process', async () => {
    const p = await start('reorder');
    await hop(p, 'h2');
    await check(p, 'on h2');
    await stopEnds(p);
  });
});

describe('daemons', () => {
  test('by default a job ends with its command: a daemonising launcher ends it', async () => {
    const pidfile = join(f.tb.sharedDir, 'daemon-default.pid');
    const job = await f.json<ClusterJob>([
      'run',
      '--host',
      'h1',
      '--',
      PY,
      join(PROGRAMS, 'daemon.py'),
      pidfile,
    ]);
    const ended = await waitForValue(async () => {
      const j = await listed(job.id);
      return j.state === 'exited' ? j : undefined;
    });
    assert.equal(ended.exitCode, 0);
    assert.equal(ended.until, 'main');
  });

  test('--until all: the job lives while its daemon does; signals reach the daemon', async () => {
    const pidfile = join(f.tb.sharedDir, 'daemon-all.pid');
    const job = await f.json<ClusterJob>([
      'run',
      '--host',
      'h1',
      '--until',
      'all',
      '--',
      PY,
      join(PROGRAMS, 'daemon.py'),
      pidfile,
    ]);
    const p = await ready(job, 'daemon');
    // The launcher is gone: no main process, and the job runs on.
    await waitForValue(async () =>
      (await listed(job.id)).mainPidInside === null ? true : undefined,
    );
    assert.equal((await listed(job.id)).state, 'running');
    await roundTrip(p, null);
    await stopEnds(p);
  });

  test("--main-pidfile: the daemon named in the pidfile is the job's main process", async () => {
    const pidfile = join(f.tb.sharedDir, 'daemon-pidfile.pid');
    const p = await start('daemon', [pidfile], ['--main-pidfile', pidfile]);
    await waitForValue(async () =>
      (await listed(p.job.id)).mainPidInside === p.pid ? true : undefined,
    );
    assert.equal((await inspect(p.job.id)).mainPidfile, pidfile);
    await roundTrip(p);
    await stopEnds(p);
  });

  test('redis-server --daemonize yes with --main-pidfile: its data and its main process move', async () => {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const pidfile = `/tmp/redis-${port}.pid`;
    const conf = join(f.tb.sharedDir, `redis-daemon-${port}.conf`);
    writeFileSync(
      conf,
      [
        'daemonize yes',
        `pidfile ${pidfile}`,
        `port ${port}`,
        'bind 0.0.0.0',
        'protected-mode no',
        'save ""',
        'appendonly no',
        'dir /tmp',
      ].join('\n') + '\n',
    );
    const job = await f.json<ClusterJob>([
      'run',
      '--host',
      'h1',
      '--main-pidfile',
      pidfile,
      '--',
      '/usr/bin/redis-server',
      conf,
    ]);
    assert.equal(job.network.mode, 'job');
    const address = job.network.mode === 'job' ? job.network.address : '';
    const cli = async (...args: string[]): Promise<string> =>
      (
        await run('redis-cli', ['-h', address, '-p', String(port), ...args], { timeout: 10_000 })
      ).stdout.trim();
    const server = await waitForValue(async () => {
      const j = await listed(job.id);
      return j.mainPidInside !== null && j.state === 'running' && (await cli('PING')) === 'PONG'
        ? j
        : undefined;
    }, 20_000);
    const inside = server.mainPidInside;
    assert.equal(await cli('SET', 'drover', 'moved'), 'OK');
    for (const to of ['h2', 'h1']) {
      const op = await f.json<{ state: string }>(['migrate', job.id, '--to', to]);
      assert.equal(op.state, 'done');
      assert.equal(await cli('GET', 'drover'), 'moved', `after the move to ${to}`);
      const i = await inspect(job.id);
      assert.equal(i.mainPidInside, inside);
      assert.match(i.processes.find((x) => x.pid === i.mainPid)?.cmdline[0] ?? '', /redis-server/);
    }
    assert.equal((await f.drover(['stop', job.id])).code, 0);
    const ended = await waitForValue(async () => {
      const j = await listed(job.id);
      return j.state === 'exited' ? j : undefined;
    });
    assert.equal(ended.exitCode, 0);
  });
});
