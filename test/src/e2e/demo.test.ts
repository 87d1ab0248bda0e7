/**
 * The README's main job, through the real CLI: `drover up` leaves a local cluster running after
 * it exits, `drover demo` tours it, `drover down` removes every trace of it — also after an `up`
 * that died half-way.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { isSameLiveProcess } from '@drover/native';
import {
  leaks,
  readLocalState,
  removeRun,
  settleLeftovers,
  type LocalClusterState,
} from '@drover/testbed';
import { CLI_MAIN, droverCli, REPO_ROOT, type CliResult } from '../cluster/cli.js';
import { waitFor } from './helpers.js';
import { scrape } from './metrics-scrape.js';

/** A private local-cluster directory per test: never the operator's, never another run's. */
const dirs: string[] = [];
function privateDir(): string {
  const d = mkdtempSync('/tmp/drover-local-test-');
  dirs.push(d);
  return d;
}

/**
 * `drover ARGS` with DROVER_LOCAL_DIR=dir, no DROVER_NATS_SERVERS (the state file decides) and
 * the contexts file in `dir` (never the machine's).
 */
function cli(dir: string, args: readonly string[], timeoutMs = 240_000): Promise<CliResult> {
  return droverCli(args, {
    env: { DROVER_LOCAL_DIR: dir, DROVER_NATS_SERVERS: undefined, DROVER_CONFIG: contextsOf(dir) },
    timeoutMs,
  });
}

function ok(r: CliResult, what: string): CliResult {
  assert.equal(
    r.code,
    0,
    `${what} exited ${r.code}:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`,
  );
  return r;
}

/** The contexts file the tests' `drover` commands read and write (beside `dir`, not in it). */
const contextsOf = (dir: string): string => `${dir}.contexts.json`;

/** Whatever happens in a test, nothing of its local clusters stays on the machine. */
after(async () => {
  for (const dir of dirs) {
    const runId = readLocalState(dir)?.runId;
    await cli(dir, ['down'], 60_000).catch(() => undefined);
    if (runId !== undefined) await removeRun(runId, { baseDir: dir });
    rmSync(dir, { recursive: true, force: true });
    rmSync(contextsOf(dir), { force: true });
  }
});

/** Everything of the run is gone: processes, namespaces, links, mounts, cgroups, files. */
async function assertGone(dir: string, state: LocalClusterState): Promise<void> {
  const runId = state.runId ?? '';
  assert.deepEqual(await settleLeftovers(runId, 5000, dir), [], `run ${runId} left resources`);
  for (const p of state.processes) {
    assert.ok(
      !isSameLiveProcess(p.pid, p.startTime),
      `${p.role} ${p.name} (pid ${p.pid}) is still running`,
    );
  }
  assert.equal(existsSync(join(dir, 'cluster.json')), false, 'the state file is still there');
  assert.equal(existsSync(join(dir, runId)), false, 'the run directory is still there');
  const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  assert.doesNotMatch(netns, new RegExp(runId), 'network namespaces are still there');
}

describe('drover up / down', () => {
  test('up leaves a working cluster behind; down removes all of it, twice is fine', async () => {
    const dir = privateDir();
    const up = ok(await cli(dir, ['up', '--hosts', '2']), 'drover up');
    const state = readLocalState(dir);
    assert.ok(state?.runId, `no state after up:\n${up.stdout}`);
    assert.equal(state.phase, 'up');
    assert.match(up.stdout, new RegExp(`local cluster ${state.runId} is up`));
    assert.match(up.stdout, /drover hosts/);
    // The up command has exited; every recorded process lives on without it.
    assert.deepEqual(state.processes.map((p) => p.role).sort(), [
      'agent',
      'agent',
      'controller',
      'host',
      'host',
      'nats',
    ]);

    // Secure by default: NATS requires TLS; drover commands use the operator's certificate
    // (recorded in the state file), and a client without one is refused.
    assert.ok(state.tls, 'drover up without --insecure records the operator certificate');
    assert.match(up.stdout, /\(TLS; drover commands use the operator certificate /);
    // Where the metrics are: printed, recorded, and answering a scrape.
    assert.ok(state.metrics?.controller, 'no controller metrics recorded');
    assert.match(up.stdout, new RegExp(`metrics ${state.metrics.controller} \\(controller\\)`));
    for (const h of ['h1', 'h2']) {
      const agentUrl = state.metrics.agents[h]!;
      assert.match(up.stdout, new RegExp(`${h} ${agentUrl.replace(/\./g, '\\.')}`));
      assert.match(await scrape(agentUrl), /^drover_agent_info\{host="[^"]+",criu="[\d.]+"\} 1$/m);
    }
    assert.match(await scrape(state.metrics.controller), /^drover_host_up\{host="h1"\} 1$/m);
    const stranger = await droverCli(['--nats', state.natsUrl ?? '', 'hosts'], {
      env: {
        DROVER_LOCAL_DIR: '/nonexistent/drover-local',
        DROVER_NATS_SERVERS: undefined,
        DROVER_CONFIG: contextsOf(dir),
      },
      timeoutMs: 60_000,
    });
    assert.notEqual(stranger.code, 0, 'a client without a certificate was let in');
    assert.match(stranger.stderr, /cannot connect to NATS/);

    // up wrote the cluster as a context (current: the file had none), which reaches it from an
    // environment that knows nothing of the local directory.
    const name = `local-${basename(dir)}`;
    assert.match(up.stdout, new RegExp(`context ${name} \\(current\\)`));
    const contexts = JSON.parse(readFileSync(contextsOf(dir), 'utf8')) as {
      current: string;
      contexts: { name: string; nats: string[]; certFile?: string }[];
    };
    assert.equal(contexts.current, name);
    assert.deepEqual(contexts.contexts.find((c) => c.name === name)?.nats, [state.natsUrl]);
    assert.equal(contexts.contexts.find((c) => c.name === name)?.certFile, state.tls.certFile);
    const viaContext = await droverCli(['--context', name, '--json', 'hosts'], {
      env: {
        DROVER_LOCAL_DIR: '/nonexistent/drover-local',
        DROVER_NATS_SERVERS: undefined,
        DROVER_CONFIG: contextsOf(dir),
      },
      timeoutMs: 60_000,
    });
    assert.equal(viaContext.code, 0, viaContext.stderr);

    // No --nats: the other commands find the cluster through the state file.
    const hosts = JSON.parse(ok(await cli(dir, ['--json', 'hosts']), 'drover hosts').stdout) as {
      hosts: { host: string; reachable: boolean }[];
    };
    assert.deepEqual(hosts.hosts.map((h) => [h.host, h.reachable]).sort(), [
      ['h1', true],
      ['h2', true],
    ]);

    // A job runs, on the host asked for, and produces output.
    const run = JSON.parse(
      ok(
        await cli(dir, [
          '--json',
          'run',
          '--host',
          'h2',
          '--',
          '/bin/sh',
          '-c',
          'i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done',
        ]),
        'drover run',
      ).stdout,
    ) as { id: string; host: string };
    assert.equal(run.host, 'h2');
    await waitFor(async () => /tick 3/.test((await cli(dir, ['logs', run.id])).stdout), 20_000);

    // A second up of the same size reports the healthy cluster; another size is refused.
    const again = ok(await cli(dir, ['up', '--hosts', '2']), 'second drover up');
    assert.match(again.stdout, /already up and healthy/);
    assert.equal(readLocalState(dir)?.runId, state.runId, 'a second up must not start another');
    const bigger = await cli(dir, ['up', '--hosts', '3']);
    assert.equal(bigger.code, 4, `up with another size: ${bigger.stderr}`);
    assert.match(bigger.stderr, /already up with 2 host\(s\), not 3; `drover down` first/);

    const down = ok(await cli(dir, ['down']), 'drover down');
    assert.match(down.stdout, new RegExp(`local cluster ${state.runId} removed`));
    await assertGone(dir, state);
    assert.equal(existsSync(dir), false, 'down removes the emptied local cluster directory');
    const left = JSON.parse(readFileSync(contextsOf(dir), 'utf8')) as { contexts: unknown[] };
    assert.deepEqual(left.contexts, [], 'down removes the context up wrote');

    const twice = ok(await cli(dir, ['down']), 'second drover down');
    assert.match(twice.stdout, /no local cluster in .*; nothing to do/);
  });

  test('up restarts a dead agent, controller and NATS without touching jobs; cluster.json gets the new PIDs', async () => {
    const dir = privateDir();
    ok(await cli(dir, ['up', '--hosts', '2']), 'drover up');
    const before = readLocalState(dir)!;
    const run = JSON.parse(
      ok(
        await cli(dir, [
          '--json',
          'run',
          '--host',
          'h1',
          '--',
          '/bin/sh',
          '-c',
          'i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done',
        ]),
        'drover run',
      ).stdout,
    ) as { id: string; rootPid: number };
    await waitFor(async () => /tick 3/.test((await cli(dir, ['logs', run.id])).stdout), 20_000);
    // Kill the agent on h1, the controller and NATS (recorded by this test's own up).
    const victims = before.processes.filter(
      (p) =>
        p.role === 'nats' || p.role === 'controller' || (p.role === 'agent' && p.name === 'h1'),
    );
    assert.equal(victims.length, 3);
    for (const p of victims) process.kill(p.pid, 'SIGKILL');
    await waitFor(async () => victims.every((p) => !existsSync(`/proc/${p.pid}/exe`)), 10_000);

    const up = ok(
      await cli(dir, ['up', '--hosts', '2']),
      'drover up on a cluster with dead pieces',
    );
    assert.match(
      up.stdout,
      /restarted NATS \(pid \d+\), the controller \(pid \d+\), the agent on h1 \(pid \d+\); jobs untouched/,
    );
    const after = readLocalState(dir)!;
    assert.equal(after.runId, before.runId, 'the same cluster, not a new one');
    for (const v of victims) {
      const now = after.processes.find((p) => p.role === v.role && p.name === v.name)!;
      assert.notEqual(now.pid, v.pid, `${v.role} ${v.name} keeps its old PID in cluster.json`);
      assert.ok(existsSync(`/proc/${now.pid}/exe`), `${v.role} ${v.name} is not running`);
    }
    // Healthy again: a plain second up says so; the job ran on, untouched, where it was.
    assert.match(
      ok(await cli(dir, ['up', '--hosts', '2']), 'third up').stdout,
      /already up and healthy/,
    );
    const job = JSON.parse(ok(await cli(dir, ['--json', 'inspect', run.id]), 'inspect').stdout) as {
      host: string;
      state: string;
      rootPid: number;
    };
    assert.deepEqual([job.host, job.state, job.rootPid], ['h1', 'running', run.rootPid]);
    const ticks = (): Promise<number> =>
      cli(dir, ['logs', run.id]).then((r) => Number(/tick (\d+)\s*$/.exec(r.stdout)?.[1] ?? 0));
    const t0 = await ticks();
    await waitFor(async () => (await ticks()) > t0, 10_000);
    ok(await cli(dir, ['down']), 'drover down');
    await assertGone(dir, after);
  });

  test('down removes what an up that was killed half-way left', async () => {
    const dir = privateDir();
    // SIGKILL the up once its hosts exist, before the controller has seen them all.
    const up = spawn(process.execPath, [CLI_MAIN, 'up', '--hosts', '2'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, DROVER_LOCAL_DIR: dir, DROVER_CONFIG: contextsOf(dir) },
    });
    let log = '';
    up.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise((r) => up.once('exit', r));
    await waitFor(async () => /starting an agent in each host/.test(log), 60_000);
    up.kill('SIGKILL');
    await exited;
    const state = readLocalState(dir);
    assert.equal(state?.phase, 'starting');
    assert.ok(state.runId);
    assert.ok(leaks(state.runId, dir).length > 0, 'the killed up left nothing to clean up');

    const refused = await cli(dir, ['up', '--hosts', '2']);
    assert.equal(refused.code, 4, refused.stderr);
    assert.match(refused.stderr, /left half-started .* `drover down` removes what it left/);

    ok(await cli(dir, ['down']), 'drover down after a killed up');
    await assertGone(dir, state);
  });
});

test('drover demo tours the local cluster to the end', async () => {
  const dir = privateDir();
  ok(await cli(dir, ['up', '--hosts', '2']), 'drover up');
  const state = readLocalState(dir);
  assert.ok(state);
  const r = ok(await cli(dir, ['demo']), 'drover demo');
  assert.match(r.stdout, /\$ drover run --host h1/);
  assert.match(r.stdout, /moved h1 → h2/);
  assert.match(r.stdout, /frozen \(downtime\) \d+ ms/);
  assert.match(r.stdout, /drain of h2: done/);
  assert.match(r.stdout, /\$ drover uncordon h2/);
  const counts = [...r.stdout.matchAll(/counter at (\d+)/g)].map((m) => Number(m[1]));
  assert.ok(counts.length >= 3, r.stdout);
  assert.ok(
    counts[0]! < counts[1]! && counts[1]! < counts[2]!,
    `the job did not keep counting across the migration and the drain: ${counts.join(' → ')}`,
  );
  // A service with its own address moved twice under a client outside the cluster that holds
  // one connection: the client's own view.
  assert.match(r.stdout, /\$ drover run --host h1 --name echo/);
  const view =
    /the client's own view: the same connection from start to end \(its port \d+\), (\d+) round trips, every echo right, longest wait (\d+) ms/.exec(
      r.stdout,
    );
  assert.ok(view, r.stdout);
  assert.ok(Number(view[1]) > 50, `too few round trips: ${view[1]}`);
  // The checkpoint + restore step: one cut of both counters, stopped, restored, going on.
  assert.match(r.stdout, /checkpoint of image set demo-\w+: done/);
  assert.match(r.stdout, /freeze skew [\d.]+ ms/);
  assert.match(r.stdout, /both stopped: they live in the image set now/);
  assert.match(r.stdout, /restore of image set demo-\w+: done/);
  assert.match(r.stdout, /no number lost or repeated/);
  const sets = JSON.parse(ok(await cli(dir, ['--json', 'images', 'ls']), 'images').stdout) as {
    sets: unknown[];
  };
  assert.deepEqual(sets.sets, [], 'the tour left an image set');
  // The tour leaves the cluster as it found it: every host in service, no job.
  const hosts = JSON.parse(ok(await cli(dir, ['--json', 'hosts']), 'hosts').stdout) as {
    hosts: { cordoned: boolean; info: { jobs: unknown[] } }[];
  };
  assert.ok(hosts.hosts.every((h) => !h.cordoned));
  ok(await cli(dir, ['down']), 'drover down');
  await assertGone(dir, state);
});

test('`npx drover` works from the repository root', () => {
  const r = spawnSync('npx', ['--no-install', 'drover', '--help'], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /drover migrate <job>/);
  assert.match(r.stdout, /drover up/);
  assert.match(r.stdout, /drover down/);
  assert.match(r.stdout, /drover demo/);
});
