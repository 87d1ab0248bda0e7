/** Tests of NATS (single and R3 cluster with JetStream) and sshd inside the testbed. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import { Bus, StateStore } from '@drover/bus';
import { Client } from 'ssh2';
import { withTestbed } from './harness.js';
import { readFromHost } from './testing.js';

test('single NATS with JetStream is reachable from the runner and from every host', async () => {
  await withTestbed({ hosts: 2, nats: 'single' }, async (tb) => {
    const nats = tb.nats;
    assert.ok(nats);
    assert.deepEqual(nats.urls, [`nats://${tb.bridgeAddress}:4222`]);
    const bus = await Bus.connect({ servers: nats.urls, name: 'testbed-test' });
    try {
      const kv = await StateStore.open<string>(bus, { bucket: 'single' });
      await kv.put('k', 'v1');
      assert.equal((await kv.get('k'))?.value, 'v1');
    } finally {
      await bus.close();
    }
    for (const h of tb.hosts)
      assert.match(await readFromHost(h, tb.bridgeAddress, 4222), /^INFO \{/);
    await nats.servers[0]?.stop();
    assert.equal(nats.servers[0]?.pid(), undefined);
    await nats.servers[0]?.restart();
    assert.ok(nats.servers[0]?.pid());
    assert.match(readFileSync(nats.servers[0]?.logPaths[1] ?? '', 'utf8'), /Server is ready/);
  });
});

test('a 3-node NATS cluster elects a JetStream leader and serves R3 KV, also with a node down', async () => {
  await withTestbed({ hosts: 3, nats: 'cluster' }, async (tb) => {
    const nats = tb.nats;
    assert.ok(nats);
    assert.equal(nats.servers.length, 3);
    type Jsz = { meta_cluster?: { leader?: string; cluster_size?: number } };
    // A meta leader is elected by 2 of 3; the third peer may join the group a moment later.
    let jsz: Jsz = {};
    for (let i = 0; i < 100; i++) {
      jsz = (await (await fetch(`${nats.servers[0]?.monitorUrl}/jsz`)).json()) as Jsz;
      if (jsz.meta_cluster?.cluster_size === 3) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(
      ['h1', 'h2', 'h3'].includes(jsz.meta_cluster?.leader ?? ''),
      JSON.stringify(jsz.meta_cluster),
    );
    assert.equal(jsz.meta_cluster?.cluster_size, 3, JSON.stringify(jsz.meta_cluster));

    const bus = await Bus.connect({ servers: nats.urls, name: 'testbed-test' });
    try {
      const kv = await StateStore.open<string>(bus, { bucket: 'cfg', replicas: 3 });
      await kv.put('a', '1');
      assert.equal((await kv.get('a'))?.value, '1');
      const cluster = await streamCluster(nats.servers[0]?.monitorUrl ?? '', 'KV_cfg');
      assert.equal(cluster.replicas?.length, 2, 'two followers besides the leader');

      // Crash a member that leads neither the stream nor (if possible) the meta group: R3 with
      // 2 of 3 alive still takes writes. The writer talks only to the survivors, so the test
      // measures the cluster, not the client's reconnect.
      const leaders = [cluster.leader, jsz.meta_cluster?.leader];
      const victim =
        nats.servers.find((s) => !leaders.includes(s.name)) ??
        nats.servers.find((s) => s.name !== leaders[0]);
      assert.ok(victim);
      const survivors = nats.servers.filter((s) => s !== victim).map((s) => s.url);
      const bus2 = await Bus.connect({ servers: survivors, name: 'testbed-test-2' });
      try {
        const kv2 = await StateStore.open<string>(bus2, { bucket: 'cfg', replicas: 3 });
        await victim.kill();
        assert.equal(victim.pid(), undefined);
        await kv2.put('a', '2');
        assert.equal((await kv2.get('a'))?.value, '2');
      } finally {
        await bus2.close();
      }
      await victim.restart();
      await nats.waitReady();
    } finally {
      await bus.close();
    }
  });
});

/** A stream's cluster info (leader, followers) from a server's monitoring endpoint. */
async function streamCluster(
  monitorUrl: string,
  stream: string,
): Promise<{ leader?: string; replicas?: unknown[] }> {
  const jsz = (await (await fetch(`${monitorUrl}/jsz?streams=true`)).json()) as {
    account_details?: { stream_detail?: { name: string; cluster?: object }[] }[];
  };
  const all = (jsz.account_details ?? []).flatMap((a) => a.stream_detail ?? []);
  const found = all.find((d) => d.name === stream);
  assert.ok(found, `stream ${stream} in ${monitorUrl}/jsz: ${JSON.stringify(jsz).slice(0, 500)}`);
  return found.cluster ?? {};
}

/** Log in with ssh2 and run `cmd`; `hostKey` is the pinned host key blob. */
function sshExec(address: string, keyPath: string, hostKey: Buffer, cmd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    c.on('ready', () => {
      c.exec(cmd, (err, stream) => {
        if (err) return reject(err);
        let out = '';
        stream.on('data', (d: Buffer) => (out += d.toString()));
        stream.on('close', (code: number) => {
          c.end();
          if (code === 0) resolve(out);
          else reject(new Error(`${cmd} exited ${code}`));
        });
      });
    });
    c.on('error', reject);
    c.connect({
      host: address,
      port: 22,
      username: 'root',
      privateKey: readFileSync(keyPath),
      hostVerifier: (key: Buffer) => key.equals(hostKey),
      readyTimeout: 5000,
    });
  });
}

test('sshd in a host accepts a key login and refuses a wrong pinned host key', async () => {
  await withTestbed({ hosts: 2 }, async (tb) => {
    const [s1, s2] = await Promise.all([tb.startSshd('h1'), tb.startSshd('h2')]);
    assert.equal(s2.user, 'root');
    assert.equal(s2.address, tb.host(2).address);
    assert.match(s2.hostPublicKey, /^ssh-ed25519 /);
    assert.notEqual(s1.hostPublicKey, s2.hostPublicKey, 'each host has its own host key');
    assert.equal(s1.clientPrivateKeyPath, s2.clientPrivateKeyPath);
    assert.equal(
      (await sshExec(s2.address, s2.clientPrivateKeyPath, s2.hostKeyBlob, 'hostname')).trim(),
      'h2',
    );
    assert.equal(
      (await sshExec(s1.address, s1.clientPrivateKeyPath, s1.hostKeyBlob, 'hostname')).trim(),
      'h1',
    );
    // h1's key pinned while talking to h2: refused before authentication.
    await assert.rejects(sshExec(s2.address, s2.clientPrivateKeyPath, s1.hostKeyBlob, 'hostname'));
    // A client key that is not authorized is refused too.
    const kg = await tb
      .host(1)
      .exec(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', '/srv/other_key']);
    assert.equal(kg.code, 0, kg.stderr);
    await assert.rejects(
      sshExec(s2.address, `${tb.host(1).stateDir}/other_key`, s2.hostKeyBlob, 'true'),
      /authentication/i,
    );
  });
});
