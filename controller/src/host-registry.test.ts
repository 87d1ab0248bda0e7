/** Tests of the host registry: heartbeats in, unreachability by a fake clock, cordons, persistence. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, isDroverError } from '@drover/common';
import type { AgentInfo } from '@drover/protocol';
import { HostRegistry } from './host-registry.js';

const GiB = 1024 * 1024 * 1024;

function heartbeat(host: string, availGiB = 8): AgentInfo {
  return {
    host,
    version: '0.1.0',
    time: '2025-01-01T00:00:00.000Z',
    uptimeSec: 1,
    kernel: '6.8.0',
    cpus: 4,
    cpuFlags: ['fpu', 'sse2'],
    memory: { totalBytes: 16 * GiB, availableBytes: availGiB * GiB },
    criu: { version: '4.0', lazyPages: true, memTrack: true },
    stream: { host: '10.0.0.1', port: 7070 },
    jobs: [{ id: 'j1', state: 'running', name: 'web' }],
  };
}

function setup(unreachableAfterMs = 5000) {
  const clock = { ms: 1_000_000 };
  const reg = new HostRegistry({ unreachableAfterMs, now: () => clock.ms });
  return { clock, reg };
}

test('a host appears on its first heartbeat', () => {
  const { reg } = setup();
  assert.equal(reg.get('h1'), undefined);
  assert.deepEqual(reg.list(), []);
  const v = reg.observe(heartbeat('h1'));
  assert.deepEqual(
    { ...v, info: v.info.host },
    { host: 'h1', info: 'h1', cordoned: false, reachable: true, lastSeenMs: 1_000_000 },
  );
  assert.equal(reg.get('h1'), v);
  assert.ok(Object.isFrozen(v));
});

test('a silent host becomes unreachable after the timeout, reported once', () => {
  const { clock, reg } = setup(5000);
  reg.observe(heartbeat('h1'));
  reg.observe(heartbeat('h2'));
  clock.ms += 5000;
  assert.deepEqual(reg.sweep(), [], 'exactly the timeout is not yet older than it');
  reg.observe(heartbeat('h2'));
  clock.ms += 1;
  assert.deepEqual(reg.sweep(), ['h1']);
  assert.equal(reg.get('h1')?.reachable, false);
  assert.equal(reg.get('h2')?.reachable, true);
  assert.deepEqual(reg.sweep(), [], 'already unreachable hosts are not reported again');
  clock.ms += 5000;
  assert.deepEqual(reg.sweep(), ['h2']);
});

test('an unreachable host comes back on a new heartbeat, with the new facts', () => {
  const { clock, reg } = setup(1000);
  reg.observe(heartbeat('h1', 8));
  clock.ms += 2000;
  reg.sweep();
  assert.equal(reg.get('h1')?.reachable, false);
  clock.ms += 10;
  const v = reg.observe(heartbeat('h1', 3));
  assert.equal(v.reachable, true);
  assert.equal(v.lastSeenMs, 1_002_010);
  assert.equal(v.info.memory.availableBytes, 3 * GiB);
  assert.deepEqual(reg.sweep(), []);
});

test('a cordon survives heartbeats and unreachability until uncordoned; unknown hosts are NOT_FOUND', () => {
  const { clock, reg } = setup(1000);
  reg.observe(heartbeat('h1'));
  assert.equal(reg.cordon('h1').cordoned, true);
  reg.observe(heartbeat('h1'));
  assert.equal(reg.get('h1')?.cordoned, true);
  clock.ms += 5000;
  reg.sweep();
  reg.observe(heartbeat('h1'));
  assert.equal(reg.get('h1')?.cordoned, true);
  assert.equal(reg.uncordon('h1').cordoned, false);
  assert.equal(reg.get('h1')?.cordoned, false);
  for (const op of [() => reg.cordon('ghost'), () => reg.uncordon('ghost')]) {
    assert.throws(op, (e) => isDroverError(e, ErrorCode.NotFound) && /ghost/.test(e.message));
  }
});

test('list is sorted by name', () => {
  const { reg } = setup();
  for (const h of ['c', 'a', 'b']) reg.observe(heartbeat(h));
  assert.deepEqual(
    reg.list().map((v) => v.host),
    ['a', 'b', 'c'],
  );
});

test('JSON round trip keeps hosts, cordons, reachability and last-seen times', () => {
  const { clock, reg } = setup(1000);
  reg.observe(heartbeat('h1'));
  reg.observe(heartbeat('h2', 4));
  reg.cordon('h2');
  clock.ms += 1500;
  reg.observe(heartbeat('h3'));
  reg.sweep();
  const doc = JSON.parse(JSON.stringify(reg)) as unknown;
  const back = HostRegistry.fromJSON(doc, { unreachableAfterMs: 1000, now: () => clock.ms });
  assert.deepEqual(back.list(), reg.list());
  assert.deepEqual(
    back.list().map((v) => [v.host, v.cordoned, v.reachable]),
    [
      ['h1', false, false],
      ['h2', true, false],
      ['h3', false, true],
    ],
  );
  // The restored registry keeps working on the same clock.
  clock.ms += 1001;
  assert.deepEqual(back.sweep(), ['h3']);
});

test('fromJSON refuses documents that are not a persisted registry', () => {
  const opts = { unreachableAfterMs: 1000 };
  const good = JSON.parse(JSON.stringify(setup().reg)) as { hosts: unknown[] };
  const entry = {
    host: 'h1',
    info: heartbeat('h1'),
    cordoned: false,
    reachable: true,
    lastSeenMs: 1,
  };
  assert.equal(HostRegistry.fromJSON({ ...good, hosts: [entry] }, opts).list().length, 1);
  const bad: unknown[] = [
    null,
    { version: 2, hosts: [] },
    { version: 1, hosts: [{ ...entry, cordoned: 'yes' }] },
    { version: 1, hosts: [{ ...entry, info: heartbeat('other') }] },
    { version: 1, hosts: [{ ...entry, info: { ...heartbeat('h1'), cpuFlags: [1] } }] },
    { version: 1, hosts: [entry, entry] },
  ];
  for (const doc of bad) {
    assert.throws(
      () => HostRegistry.fromJSON(doc, opts),
      (e) => isDroverError(e, ErrorCode.InvalidArgument),
      JSON.stringify(doc)?.slice(0, 80),
    );
  }
  assert.throws(
    () => new HostRegistry({ unreachableAfterMs: 0 }),
    (e) => isDroverError(e, ErrorCode.InvalidArgument),
  );
});
