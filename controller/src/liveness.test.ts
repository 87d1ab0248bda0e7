/**
 * Tests of the controller's liveness verdicts: a silent host is probed before it is called
 * unreachable; a long call fails only when its agent does not answer the probe or restarted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError, nullLogger } from '@drover/common';
import type { AgentInfo, LivenessReply } from '@drover/protocol';
import { HostRegistry } from './host-registry.js';
import { usableHost } from './host-access.js';
import { Liveness } from './liveness.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function heartbeat(host: string, uptimeSec = 100): AgentInfo {
  return {
    host,
    version: '0.1.0',
    time: new Date().toISOString(),
    uptimeSec,
    kernel: '6.18.0',
    cpus: 2,
    cpuFlags: [],
    memory: { totalBytes: 1 << 30, availableBytes: 1 << 29 },
    criu: { version: '4.2.1', lazyPages: true, memTrack: false },
    stream: { host: '10.0.0.1', port: 7070 },
    jobs: [],
  };
}

/** A bus whose probes each host answers as `answers` says now (null: no answer). */
function probes(answers: Map<string, () => LivenessReply | null>): {
  request(subject: string): Promise<unknown>;
  asked: string[];
} {
  const asked: string[] = [];
  return {
    asked,
    async request(subject: string) {
      const host = subject.split('.').at(-1)!;
      asked.push(host);
      const a = answers.get(host)?.() ?? null;
      if (a === null) throw new Error('no responders');
      return a;
    },
  };
}

const alive = (host: string, uptimeSec: number): LivenessReply => ({
  host,
  pid: 1234,
  uptimeSec,
  loop: { lagMs: 900, stalledMs: 4000 },
});

test('a silent host that answers its probe stays reachable; one that does not is marked unreachable', async () => {
  const reg = new HostRegistry({ unreachableAfterMs: 100 });
  reg.observe(heartbeat('busy'));
  reg.observe(heartbeat('dead'));
  const bus = probes(new Map([['busy', () => alive('busy', 101)]]));
  const live = new Liveness(bus, reg, 100, nullLogger);
  await sleep(150);
  await live.sweep();
  assert.deepEqual(bus.asked.sort(), ['busy', 'dead']);
  assert.equal(reg.get('busy')!.reachable, true, 'a busy agent was called unreachable');
  assert.deepEqual(reg.get('busy')!.info.loop, { lagMs: 900, stalledMs: 4000 });
  assert.equal(reg.get('dead')!.reachable, false);
  // Hosts that send heartbeats are not probed at all.
  bus.asked.length = 0;
  reg.observe(heartbeat('busy'));
  await live.sweep();
  assert.deepEqual(bus.asked, []);
});

test('a long call on a silent agent that answers probes keeps going and gets its result', async () => {
  const reg = new HostRegistry({ unreachableAfterMs: 200 });
  reg.observe(heartbeat('h1'));
  const bus = probes(new Map([['h1', () => alive('h1', 101)]]));
  const live = new Liveness(bus, reg, 200, nullLogger);
  const result = await live.watch(
    'h1',
    'image-fetch',
    sleep(1500).then(() => 'fetched'),
  );
  assert.equal(result, 'fetched');
  assert.ok(bus.asked.length >= 1, 'the silent agent was never probed');
});

test('a long call fails when its agent stops answering probes too, or answers restarted', async () => {
  const reg = new HostRegistry({ unreachableAfterMs: 200 });
  reg.observe(heartbeat('h1'));
  reg.observe(heartbeat('h2'));
  let h1Answers = true;
  const bus = probes(
    new Map([
      ['h1', () => (h1Answers ? alive('h1', 101) : null)],
      ['h2', () => alive('h2', 0)], // a new process: it started after the call
    ]),
  );
  const live = new Liveness(bus, reg, 200, nullLogger);
  const never = new Promise<string>(() => {});
  const t0 = Date.now();
  const onH1 = live.watch('h1', 'image-push', never);
  await sleep(600);
  h1Answers = false;
  await assert.rejects(
    onH1,
    (e: unknown) =>
      isDroverError(e, 'UNAVAILABLE') &&
      /the agent on h1 stopped answering \(no heartbeat, no answer to a liveness probe\) during image-push/.test(
        String(e),
      ),
  );
  assert.ok(Date.now() - t0 >= 600, 'gone while it still answered');
  await assert.rejects(
    live.watch('h2', 'checkpoint', never),
    (e: unknown) =>
      isDroverError(e, 'UNAVAILABLE') && /h2 restarted during checkpoint/.test(String(e)),
  );
});

test('work for a host marked unreachable waits for a direct probe: refused only if it does not answer now', async () => {
  const reg = new HostRegistry({ unreachableAfterMs: 100 });
  reg.observe(heartbeat('late'));
  reg.observe(heartbeat('dead'));
  let lateAnswers = false;
  const bus = probes(new Map([['late', () => (lateAnswers ? alive('late', 102) : null)]]));
  const live = new Liveness(bus, reg, 100, nullLogger);
  await sleep(150);
  await live.sweep();
  assert.equal(reg.get('late')!.reachable, false);
  assert.equal(reg.get('dead')!.reachable, false);
  // The loaded host answers now: asked before work is refused, it is reachable again.
  lateAnswers = true;
  bus.asked.length = 0;
  await live.recheck('late');
  await live.recheck('dead');
  assert.deepEqual(bus.asked.sort(), ['dead', 'late']);
  assert.equal(reg.get('late')!.reachable, true);
  assert.equal(reg.get('late')!.info.uptimeSec, 102);
  assert.doesNotThrow(() => usableHost(reg, null, 'late'));
  assert.throws(() => usableHost(reg, null, 'dead'), /host dead is unreachable/);
  // A reachable host is not asked.
  bus.asked.length = 0;
  await live.recheck('late');
  assert.deepEqual(bus.asked, []);
});
