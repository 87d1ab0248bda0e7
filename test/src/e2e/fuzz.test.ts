/**
 * Hostile input: a real agent (in an emulated host) and a real controller get at least 10,000
 * malformed messages across every subject they serve. Each must be answered in time with a typed
 * failure (or, for a valid request to a read-only operation, a result); afterwards both still
 * serve, are the same processes, and nothing was started. DROVER_FUZZ_SEED reproduces a run.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { ErrorCode, isDroverError } from '@drover/common';
import { controllerSubject, decodeReply, RemoteError } from '@drover/protocol';
import { ControllerClient, type Bus } from '@drover/bus';
import type { AgentHandle } from '@drover/testbed';
import { ClusterFixture } from '../cluster/fixture.js';
import { nextMessage, prng, type FuzzMessage } from './fuzz-gen.js';
import { waitFor, waitForValue } from './helpers.js';

const MESSAGES = Number(process.env.DROVER_FUZZ_MESSAGES ?? 10_000);
const SEED = Number(process.env.DROVER_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const CONCURRENCY = 24;
const REPLY_TIMEOUT_MS = 10_000;

let f: ClusterFixture;
let agent: AgentHandle;
let bus: Bus;
let controller: ControllerClient;

before(async () => {
  f = await ClusterFixture.start({ hosts: 1, agents: { logLevel: 'info' } });
  agent = f.agent('h1');
  bus = f.agents.bus;
  controller = new ControllerClient(bus);
});

after(async () => {
  await f?.stop();
});

/** Send one message; a problem description, or null when the answer is what it must be. */
async function check(m: FuzzMessage): Promise<string | null> {
  try {
    await bus.request(m.subject, m.body, REPLY_TIMEOUT_MS);
    return m.expect === 'valid-read' ? null : 'succeeded';
  } catch (err) {
    if (!(err instanceof RemoteError)) {
      return `no typed failure: ${isDroverError(err) ? err.code : ''} ${String(err)}`;
    }
    if (m.expect === 'invalid' && err.code !== ErrorCode.InvalidArgument)
      return `failed with ${err.code}, not INVALID_ARGUMENT: ${err.message}`;
    if (m.expect === 'unknown' && err.code !== ErrorCode.NotFound)
      return `failed with ${err.code}, not NOT_FOUND: ${err.message}`;
    return null;
  }
}

function describeMessage(m: FuzzMessage): string {
  const text = Buffer.from(m.body.subarray(0, 160)).toString('utf8');
  return `${m.subject} [${m.kind}, ${m.body.byteLength} bytes, expect ${m.expect}]: ${JSON.stringify(text)}`;
}

/** A plain NATS request, without the client's request id (served once, answered once). */
async function plainRequest(subject: string, body: string): Promise<unknown> {
  const msg = await bus.nc.request(subject, new TextEncoder().encode(body), {
    timeout: REPLY_TIMEOUT_MS,
  });
  return decodeReply(msg.data);
}

describe('hostile input', () => {
  test(`${MESSAGES} malformed messages to every agent and controller subject`, async () => {
    console.log(`fuzz seed ${SEED} (DROVER_FUZZ_SEED=${SEED} reproduces this run)`);
    const agentPid = agent.process!.pid;
    const r = prng(SEED);
    const problems: string[] = [];
    const counts = new Map<string, number>();
    let sent = 0;
    const worker = async (): Promise<void> => {
      while (sent < MESSAGES && problems.length < 20) {
        sent++;
        const m = nextMessage(r, agent.hostId);
        counts.set(m.subject, (counts.get(m.subject) ?? 0) + 1);
        const problem = await check(m);
        if (problem) problems.push(`${problem}\n    ${describeMessage(m)}`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    assert.deepEqual(problems, [], `seed ${SEED}:\n${problems.join('\n')}`);
    assert.ok(sent >= MESSAGES);

    // Requests without the client's request id are validated the same way.
    for (const subject of [controllerSubject('run'), `drover.agent.${agent.hostId}.run`]) {
      for (const text of ['{', '{"command":[]}', '', '{"__proto__":{"command":["sh"]}}']) {
        await assert.rejects(
          plainRequest(subject, text),
          (err: unknown) => err instanceof RemoteError && err.code === ErrorCode.InvalidArgument,
        );
      }
    }

    // Both daemons still serve, as the same processes, and nothing was started or recorded.
    assert.equal(agent.process!.pid, agentPid);
    assert.ok(f.controller.running(), 'the controller exited');
    const info = await agent.client.call('info', {});
    assert.equal(info.host, agent.hostId);
    assert.deepEqual(info.jobs, []);
    assert.deepEqual((await agent.client.call('list', {})).jobs, []);
    assert.deepEqual((await agent.client.call('images-list', {})).images, []);
    assert.deepEqual((await agent.client.call('migrations-list', {})).migrations, []);
    const hosts = await controller.call('hosts', {});
    assert.deepEqual(
      hosts.hosts.map((h) => [h.host, h.reachable, h.cordoned]),
      [[agent.hostId, true, false]],
    );
    assert.deepEqual((await controller.call('jobs', {})).jobs, []);
    assert.deepEqual((await controller.call('ops', {})).ops, []);
    assert.deepEqual((await controller.call('images-list', {})).sets, []);
    assert.ok(agent.process!.pid === agentPid && f.controller.running());
  });
});

describe('a job cannot make the agent leave its job directory', () => {
  const sh = (script: string): string[] => ['/bin/sh', '-c', script];

  test('logs never read through a stdout.log the job replaced by a symlink', async () => {
    const job = await agent.client.call('run', {
      command: sh('echo hello; ln -sf /etc/shadow "$DROVER_JOB_DIR/stdout.log"; sleep 300'),
    });
    const planted = `${agent.srvPath(job.jobDir)}/stdout.log`;
    await waitFor(async () => {
      try {
        return readFileSync(planted, 'utf8').includes('root:');
      } catch {
        return false;
      }
    }, 10_000);
    await assert.rejects(
      agent.client.call('logs', { jobId: job.id }),
      (err: unknown) => err instanceof RemoteError && err.code === ErrorCode.FailedPrecondition,
    );
    await agent.client.call('signal', { jobId: job.id, signal: 'SIGKILL' });
    await waitForValue(async () => {
      const j = await agent.client.call('inspect', { jobId: job.id });
      return j.state === 'exited' ? j : undefined;
    }, 10_000);
    await agent.client.call('remove', { jobId: job.id });
  });

  test('an exit-status symlink is not followed', async () => {
    const target = agent.srvPath('/srv/fuzz-exit-target');
    writeFileSync(target, '42\n');
    // The job plants the link, then kills its wrapper so the wrapper never replaces it.
    const job = await agent.client.call('run', {
      command: sh('ln -s /srv/fuzz-exit-target "$DROVER_JOB_DIR/exit-status"; kill -9 $PPID'),
    });
    const done = await waitForValue(async () => {
      const j = await agent.client.call('inspect', { jobId: job.id });
      return j.state === 'exited' ? j : undefined;
    }, 10_000);
    assert.notEqual(done.exitCode, 42);
    assert.equal(readFileSync(target, 'utf8'), '42\n');
    await agent.client.call('remove', { jobId: job.id });
  });

  test("a job's environment reaches only its command, never the agent's helpers", async () => {
    // With PATH or LD_PRELOAD applied to the launcher, the job would not even start.
    const job = await agent.client.call('run', {
      command: sh('echo "P=$PATH L=$LD_PRELOAD D=$DROVER_JOB_DIR"'),
      env: { PATH: '/nonexistent-drover', LD_PRELOAD: '/nonexistent-drover.so' },
    });
    const done = await waitForValue(async () => {
      const j = await agent.client.call('inspect', { jobId: job.id });
      return j.state === 'exited' ? j : undefined;
    }, 10_000);
    assert.equal(done.exitCode, 0, done.note ?? '');
    const out = (await agent.client.call('logs', { jobId: job.id })).data;
    assert.match(out, /P=\/nonexistent-drover L=\/nonexistent-drover\.so D=\/srv\/drover\/jobs\//);
    await agent.client.call('remove', { jobId: job.id });
    await assert.rejects(
      agent.client.call('run', { command: ['/bin/true'], cwd: '/srv/../etc' }),
      (err: unknown) => err instanceof RemoteError && err.code === ErrorCode.InvalidArgument,
    );
  });
});
