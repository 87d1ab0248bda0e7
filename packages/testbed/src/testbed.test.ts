/** Tests of emulated hosts, links and teardown against real namespaces (run as root). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isAlive, settleLeftovers, Testbed } from '@drover/local-cluster';
import { withTestbed, TestbedError } from './harness.js';
import { readFromHost, readFromRunner, startListener } from './testing.js';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/** Process names (comm) visible inside a host, sorted. */
async function psNames(tb: Testbed, i: number): Promise<string[]> {
  const r = await tb.host(i).exec(['ps', '-e', '-o', 'comm=']);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout
    .trim()
    .split('\n')
    .map((s) => s.trim())
    .sort();
}

test('hosts are isolated machines on one private network', async () => {
  await withTestbed({ hosts: 3 }, async (tb) => {
    assert.equal(new Set(tb.hosts.map((h) => h.address)).size, 3);
    for (const h of tb.hosts) {
      assert.match(h.address, new RegExp(`^10\\.77\\.${tb.subnet}\\.1[123]$`));
      assert.equal((await h.exec(['hostname'])).stdout.trim(), h.name);
      assert.ok(isAlive(h.initPid));
    }
    // A fresh host sees only its init, the keep-alive shell (and its sleep) and ps itself.
    for (const i of [1, 2, 3])
      assert.deepEqual(await psNames(tb, i), ['ps', 'sh', 'sleep', 'tini']);
    const listeners = await Promise.all(tb.hosts.map((h) => startListener(h)));
    for (const [i, p] of listeners.entries()) {
      assert.notEqual(p.pid, p.hostPid, 'root-namespace PID differs from the in-host PID');
      assert.equal(
        readFileSync(`/proc/${p.pid}/comm`, 'utf8').trim(),
        'node',
        'pid is the command, not nsenter',
      );
      // Each host sees its own listener and none of the other two.
      assert.deepEqual(await psNames(tb, i + 1), ['node', 'ps', 'sh', 'sleep', 'tini']);
    }
    for (const from of tb.hosts) {
      for (const to of tb.hosts) {
        if (from !== to)
          assert.equal(await readFromHost(from, to.address), to.name, `${from.name} → ${to.name}`);
      }
      assert.equal(await readFromRunner(from.address), from.name, `runner → ${from.name}`);
    }
    // Nothing outside the bridge is routable: only the /24, no default route. (No traffic sent.)
    for (const h of tb.hosts) {
      const routes = (await h.exec(['ip', '-4', 'route', 'show'])).stdout.trim().split('\n');
      assert.deepEqual(
        routes.map((r) => r.split(' ')[0]),
        [`10.77.${tb.subnet}.0/24`],
      );
      const out = await h.exec(['ip', 'route', 'get', '1.1.1.1']);
      assert.notEqual(out.code, 0);
      assert.match(out.stderr, /unreachable/i);
      const v6 = await h.exec(['ip', '-6', 'route', 'get', '2606:4700::1111']);
      assert.notEqual(v6.code, 0);
    }
  });
});

test('each host has its own disk; only the shared directory and the PKI are seen by all', async () => {
  await withTestbed({ hosts: 2 }, async (tb) => {
    const [h1, h2] = [tb.host(1), tb.host(2)];
    const sh = (h: typeof h1, cmd: string) => h.exec(['/bin/sh', '-c', cmd]);
    // h1 writes to its own /srv, /tmp and /dev/shm, and to the shared directory.
    assert.equal(
      (await sh(h1, 'echo one > /srv/mine && echo t > /tmp/mine && echo s > /dev/shm/mine')).code,
      0,
    );
    assert.equal((await sh(h1, `echo shared > ${tb.sharedDir}/ours`)).code, 0);
    for (const path of [
      '/srv/mine',
      '/tmp/mine',
      '/dev/shm/mine',
      join(h1.stateDir, 'mine'),
      h1.stateDir,
    ])
      assert.notEqual((await h2.exec(['test', '-e', path])).code, 0, `h2 reaches ${path}`);
    assert.equal((await h2.exec(['cat', `${tb.sharedDir}/ours`])).stdout, 'shared\n');
    assert.equal(
      readFileSync(join(h1.stateDir, 'mine'), 'utf8'),
      'one\n',
      "the runner sees h1's disk",
    );
    // Each host's sysfs lists its own links: its job bridge, not the runner's.
    assert.equal((await h1.exec(['test', '-d', '/sys/class/net/drover0/bridge'])).code, 0);
    assert.equal((await h1.exec(['test', '-e', `/sys/class/net/${tb.bridge}`])).code, 1);
    // The job bridges share one segment with the root namespace (the gateway answers an ARP
    // probe sent from h1's bridge).
    const probe = await sh(h1, `arping -D -c 1 -w 2 -I drover0 ${tb.jobNetwork.gateway}`);
    assert.match(probe.stdout, /reply from/i, probe.stdout + probe.stderr);
  });
});

test('kill() makes a host disappear with all its processes', async () => {
  await withTestbed({ hosts: 3 }, async (tb) => {
    const victim = tb.host(2);
    const p = await startListener(victim);
    const inner = await victim.spawn(['sleep', '1000'], { name: 'sleeper' });
    assert.equal(await readFromRunner(victim.address), 'h2');
    const init = victim.initPid;
    await victim.kill();
    assert.equal(isAlive(init), false, 'tini is gone');
    assert.equal(isAlive(p.pid), false, 'listener is gone');
    assert.equal(isAlive(inner.pid), false, 'sleeper is gone');
    assert.equal((await p.exited).signal, 'SIGKILL'); // nsenter mirrors its command's death
    assert.ok(victim.dead);
    await assert.rejects(victim.exec(['true']), /dead/);
    assert.match(await readFromRunner(victim.address, 7000, 800), /^ERR /);
    // The survivors still talk to each other.
    await startListener(tb.host(3));
    assert.equal(await readFromHost(tb.host(1), tb.host(3).address), 'h3');
  });
});

test('cutLink() partitions a host and restoreLink() heals it', async () => {
  await withTestbed({ hosts: 2 }, async (tb) => {
    const [h1, h2] = [tb.host(1), tb.host(2)];
    await startListener(h1);
    assert.equal(await readFromHost(h2, h1.address), 'h1');
    await h1.cutLink();
    assert.match(await readFromHost(h2, h1.address, 7000, 1000), /^ERR (ETIMEDOUT|EHOSTUNREACH)/);
    assert.match(await readFromRunner(h1.address, 7000, 1000), /^ERR (ETIMEDOUT|EHOSTUNREACH)/);
    assert.equal(
      (await h1.exec(['hostname'])).stdout.trim(),
      'h1',
      'the host itself keeps running',
    );
    await h1.restoreLink();
    let got = '';
    for (let i = 0; i < 20 && got !== 'h1'; i++)
      got = await readFromHost(h2, h1.address, 7000, 1000);
    assert.equal(got, 'h1');
    assert.equal(await readFromRunner(h1.address), 'h1');
  });
});

test('teardown leaves no namespace, interface, mount, cgroup or process behind', async () => {
  const tb = await Testbed.create({ hosts: 3, nats: 'single' });
  try {
    await startListener(tb.host(1));
    await tb.host(2).spawn(['sleep', '1000']);
    const before = tb.leaks();
    const kinds = new Set(before.map((l) => l.kind));
    // The leak check must see a live run, or its empty answer after teardown would prove nothing.
    for (const k of ['netns', 'interface', 'mount', 'process', 'file'] as const)
      assert.ok(kinds.has(k), `sees ${k}`);
    assert.equal(before.filter((l) => l.kind === 'netns').length, 3);
    // 3 veths + their bridge, and the job segment: 3 uplinks + its bridge.
    assert.equal(before.filter((l) => l.kind === 'interface').length, 8);
    assert.ok(before.some((l) => l.kind === 'process' && /nats-server/.test(l.detail ?? '')));
  } finally {
    await tb.teardown();
  }
  assert.deepEqual(await settleLeftovers(tb.runId), []);
});

test('withTestbed keeps the logs of a failed run and still tears down', async () => {
  let runId = '';
  const err = await withTestbed({ hosts: 1 }, async (tb) => {
    runId = tb.runId;
    const p = await tb
      .host(1)
      .spawn(['/bin/sh', '-c', 'echo marker-$(hostname)-out; echo marker-err >&2; sleep 1000'], {
        name: 'chatty',
      });
    await p.waitForOutput(/marker-err/);
    throw new Error('body failed on purpose');
  }).then(
    () => assert.fail('withTestbed should rethrow'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof TestbedError);
  assert.match(err.message, /body failed on purpose/);
  assert.equal((err.cause as Error).message, 'body failed on purpose');
  const dir = err.details.logDir as string;
  assert.ok(err.message.includes(dir));
  assert.match(readFileSync(join(dir, 'h1', 'chatty.stdout.log'), 'utf8'), /marker-h1-out/);
  assert.match(readFileSync(join(dir, 'h1', 'chatty.stderr.log'), 'utf8'), /marker-err/);
  assert.match(readFileSync(join(dir, 'testbed.txt'), 'utf8'), /sleep 1000/);
  assert.ok(readdirSync(dir).includes('h1'));
  assert.deepEqual(await settleLeftovers(runId), []);
  rmSync(dir, { recursive: true, force: true });
});
