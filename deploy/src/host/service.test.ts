/**
 * The host-side service helper, run as hosts run it (a release directory, `node
 * bin/drover-service.js <verb> --root R`), with a stand-in agent that records its arguments.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { buildSync } from 'esbuild';
import { procStat, sameProcess, type PidRecord, type ServiceSpec } from './service.js';

const run = promisify(execFile);
const HELPER = fileURLToPath(new URL('./service.js', import.meta.url));

/** A fake agent: records its argv and pid, then idles until signalled. */
const FAKE_AGENT = `
import { appendFileSync } from 'node:fs';
appendFileSync(process.env.FAKE_LOG ?? '/dev/null', JSON.stringify({ pid: process.pid, argv: process.argv.slice(2) }) + '\\n');
setInterval(() => {}, 1000);
`;

let root: string;
let helper: string;

function makeRelease(id: string): void {
  const rel = join(root, 'releases', id);
  mkdirSync(join(rel, 'agent', 'dist'), { recursive: true });
  mkdirSync(join(rel, 'bin'), { recursive: true });
  writeFileSync(join(rel, 'package.json'), '{"type":"module"}\n');
  writeFileSync(join(rel, 'agent', 'dist', 'main.js'), FAKE_AGENT);
  // One file, as the release bundle makes it (bundle.ts).
  buildSync({
    entryPoints: [HELPER],
    outfile: join(rel, 'bin', 'drover-service.js'),
    bundle: true,
    platform: 'node',
    format: 'esm',
    logLevel: 'silent',
  });
}

async function helperCall<T>(verb: string, ...args: string[]): Promise<T> {
  const { stdout } = await run(process.execPath, [helper, verb, ...args], { timeout: 60_000 });
  return JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as T;
}

function pidRecord(): PidRecord | null {
  try {
    return JSON.parse(readFileSync(join(root, 'run', 'supervisor.json'), 'utf8')) as PidRecord;
  } catch {
    return null;
  }
}

async function waitUntil(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(() => {
  root = mkdtempSync(join(tmpdir(), 'drover-service-'));
  for (const d of ['releases', 'etc', 'run', 'log']) mkdirSync(join(root, d));
  makeRelease('aaaa000011112222');
  symlinkSync('releases/aaaa000011112222', join(root, 'current'));
  const spec: ServiceSpec = {
    format: 1,
    mode: 'supervisor',
    unit: 'drover-agent.service',
    node: process.execPath,
    config: join(root, 'etc', 'agent.json'),
    stateDir: join(root, 'state'),
    path: process.env.PATH ?? '/usr/bin:/bin',
  };
  writeFileSync(join(root, 'etc', 'service.json'), JSON.stringify(spec));
  helper = join(root, 'current', 'bin', 'drover-service.js');
});

after(async () => {
  // Whatever a failed test left running: stop it through the helper (checked PIDs).
  await helperCall('stop', '--root', root).catch(() => {});
  rmSync(root, { recursive: true, force: true });
});

type Status = {
  running: boolean;
  agentPid: number | null;
  supervisorPid: number | null;
  release: string | null;
  restarts: number;
  changed?: boolean;
};

test('start runs the agent under a supervisor, in its own session, and is idempotent', async () => {
  const st = await helperCall<Status & { startedAtMs: number }>('start', '--root', root);
  assert.equal(st.running, true);
  assert.equal(st.changed, true);
  assert.equal(st.release, 'aaaa000011112222');
  assert.ok(st.agentPid && st.supervisorPid);
  const cmd = readFileSync(`/proc/${st.agentPid}/cmdline`, 'utf8').split('\0');
  assert.ok(
    cmd.includes('--config') && cmd.includes(join(root, 'etc', 'agent.json')),
    cmd.join(' '),
  );
  assert.ok(
    cmd.some((a) => a.endsWith('/releases/aaaa000011112222/agent/dist/main.js')),
    'the agent runs from the resolved release',
  );
  // The supervisor is a session leader: the SSH session that started it can go away.
  const sid = readFileSync(`/proc/${st.supervisorPid}/stat`, 'utf8').split(') ')[1]?.split(' ')[3];
  assert.equal(Number(sid), st.supervisorPid);
  const again = await helperCall<Status>('start', '--root', root);
  assert.equal(again.changed, false);
  assert.equal(again.agentPid, st.agentPid);
});

test('the supervisor restarts an agent that dies', async () => {
  const st = await helperCall<Status>('status', '--root', root);
  assert.ok(st.agentPid);
  process.kill(st.agentPid, 'SIGKILL');
  await waitUntil(
    () => {
      const r = pidRecord();
      return r !== null && r.agentPid !== st.agentPid && sameProcess(r.agentPid, r.agentStartTicks);
    },
    10_000,
    'a new agent',
  );
  const now = await helperCall<Status>('status', '--root', root);
  assert.equal(now.running, true);
  assert.equal(now.restarts, 1);
  assert.equal(now.supervisorPid, st.supervisorPid);
});

test('stop ends supervisor and agent by checked PID and removes the pid file; again changes nothing', async () => {
  const st = await helperCall<Status>('status', '--root', root);
  const sup = st.supervisorPid as number;
  const agent = st.agentPid as number;
  const stopped = await helperCall<Status>('stop', '--root', root);
  assert.equal(stopped.changed, true);
  assert.equal(stopped.running, false);
  for (const pid of [sup, agent]) {
    const s = procStat(pid);
    assert.ok(s === null || s.state === 'Z', `pid ${pid} still runs`);
  }
  assert.equal(existsSync(join(root, 'run', 'supervisor.json')), false);
  assert.equal((await helperCall<Status>('stop', '--root', root)).changed, false);
});

test('a stale pid file naming a live but different process is never signalled', async () => {
  const bystander = spawn('sleep', ['30'], { stdio: 'ignore' });
  try {
    const pid = bystander.pid as number;
    await waitUntil(() => procStat(pid) !== null, 2000, 'sleep');
    const real = procStat(pid)?.startTicks ?? 0;
    const stale: PidRecord = {
      format: 1,
      pid,
      startTicks: real + 1, // same PID, another start time: a reused PID
      agentPid: pid,
      agentStartTicks: real - 1,
      release: 'x',
      restarts: 0,
    };
    writeFileSync(join(root, 'run', 'supervisor.json'), JSON.stringify(stale));
    assert.equal((await helperCall<Status>('status', '--root', root)).running, false);
    const r = await helperCall<Status>('stop', '--root', root);
    assert.equal(r.changed, false);
    assert.equal(
      procStat(pid)?.state !== undefined && procStat(pid)?.state !== 'Z',
      true,
      'the bystander lives',
    );
    assert.equal(existsSync(join(root, 'run', 'supervisor.json')), false, 'stale record removed');
  } finally {
    bystander.kill('SIGKILL');
  }
});

test('jobs lists only records whose root process is still the recorded one', async () => {
  const state = join(root, 'state');
  const live = spawn('sleep', ['30'], { stdio: 'ignore' });
  try {
    const pid = live.pid as number;
    await waitUntil(() => procStat(pid) !== null, 2000, 'sleep');
    const ticks = procStat(pid)?.startTicks ?? 0;
    const job = (id: string, rec: Record<string, unknown>): void => {
      mkdirSync(join(state, 'jobs', id), { recursive: true });
      writeFileSync(join(state, 'jobs', id, 'record.json'), JSON.stringify({ name: id, ...rec }));
    };
    job('job-live', { state: 'running', rootPid: pid, rootStartTicks: ticks });
    job('job-reused', { state: 'running', rootPid: pid, rootStartTicks: ticks + 7 });
    job('job-exited', { state: 'exited', rootPid: pid, rootStartTicks: ticks });
    job('job-moved', { state: 'migrated', rootPid: null });
    const { jobs } = await helperCall<{ jobs: { id: string }[] }>('jobs', '--state-dir', state);
    assert.deepEqual(
      jobs.map((j) => j.id),
      ['job-live'],
    );
  } finally {
    live.kill('SIGKILL');
  }
});

test('a named service (exec, @RELEASE@) runs beside the agent with its own record, log and stop', async () => {
  const spec: ServiceSpec = {
    format: 1,
    exec: [process.execPath, '@RELEASE@/agent/dist/main.js', '--as', 'nats'],
    mode: 'supervisor',
    unit: 'drover-nats.service',
    node: process.execPath,
    config: join(root, 'etc', 'nats.conf'),
    stateDir: join(root, 'state'),
    path: process.env.PATH ?? '/usr/bin:/bin',
  };
  writeFileSync(join(root, 'etc', 'nats-service.json'), JSON.stringify(spec));
  const agent = await helperCall<Status>('start', '--root', root);
  const nats = await helperCall<Status>('start', '--root', root, '--name', 'nats');
  try {
    assert.equal(nats.changed, true);
    assert.equal(nats.release, 'aaaa000011112222');
    assert.notEqual(nats.supervisorPid, agent.supervisorPid, 'a supervisor of its own');
    const cmd = readFileSync(`/proc/${nats.agentPid}/cmdline`, 'utf8').split('\0');
    assert.ok(cmd.includes('--as') && cmd.includes('nats'), cmd.join(' '));
    assert.ok(
      cmd.some((a) => a.endsWith('/releases/aaaa000011112222/agent/dist/main.js')),
      '@RELEASE@ is the resolved release',
    );
    assert.ok(existsSync(join(root, 'run', 'nats-supervisor.json')));
    assert.ok(existsSync(join(root, 'log', 'nats-supervisor.log')));
    // Each name sees only its own service.
    const ag = await helperCall<Status>('status', '--root', root);
    assert.equal(ag.agentPid, agent.agentPid);
    const stopped = await helperCall<Status>('stop', '--root', root, '--name', 'nats');
    assert.equal(stopped.changed, true);
    assert.equal(stopped.running, false);
    assert.equal(sameProcess(nats.agentPid, procStat(nats.agentPid ?? 0)?.startTicks ?? -1), false);
    assert.equal(
      (await helperCall<Status>('status', '--root', root)).running,
      true,
      'agent runs on',
    );
    await assert.rejects(
      helperCall('status', '--root', root, '--name', 'bogus'),
      /unknown service bogus/,
    );
  } finally {
    await helperCall('stop', '--root', root, '--name', 'nats').catch(() => {});
    await helperCall('stop', '--root', root);
  }
});
