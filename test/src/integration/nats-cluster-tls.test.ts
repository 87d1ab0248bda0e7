/**
 * A secure 3-node NATS cluster on the testbed (`secure: true, nats: 'cluster'`): client TLS with
 * the generated authorization on every server, and routes that require TLS with a route
 * certificate of the run's CA. A replicated (R3) key-value bucket works through it; a fourth
 * nats-server is admitted as a route only with such a certificate — not without TLS, not with a
 * forged route certificate of another CA, not with an agent's certificate of the same CA — and a
 * plain TCP connection to a route port is dropped.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Bus, StateStore } from '@drover/bus';
import { initCa, issueNatsNode, serverPaths, type CertFiles } from '@drover/certs';
import { NATS_PORTS, Testbed, type HostProcess, type NatsServer } from '@drover/testbed';
import { waitFor } from '../e2e/helpers.js';

let tb: Testbed;
let servers: readonly NatsServer[];
const open: Bus[] = [];

before(async () => {
  // h1..h3 run the cluster; h4 is where the would-be members run.
  tb = await Testbed.create({ hosts: 4, nats: 'cluster', secure: true });
  servers = tb.nats!.servers;
});

after(async () => {
  for (const b of open) await b.close().catch(() => {});
  await tb?.teardown();
});

async function monitor<T>(s: NatsServer, path: string): Promise<T> {
  const r = await fetch(`${s.monitorUrl}${path}`, { signal: AbortSignal.timeout(2000) });
  return (await r.json()) as T;
}

/**
 * The servers `s` has routes to. Counted by peer, not by connection: nats-server >= 2.10 keeps a
 * pool of route connections per peer (and one per pinned account), 2.9 kept one.
 */
const routeCount = async (s: NatsServer): Promise<number> =>
  new Set(
    ((await monitor<{ routes?: { remote_id: string }[] }>(s, '/routez')).routes ?? []).map(
      (r) => r.remote_id,
    ),
  ).size;

async function routeCounts(): Promise<number[]> {
  return Promise.all(servers.map(routeCount));
}

/** Stderr and stdout of a cluster server so far (nats-server logs to stderr). */
function logOf(s: NatsServer): string {
  return s.logPaths.map((p) => readFileSync(p, 'utf8')).join('');
}

/** Route connections from `address` that `s` closed, as its log tells. */
function closedRoutesFrom(s: NatsServer, address: string): number {
  const re = new RegExp(
    `${address.replaceAll('.', '\\.')}:\\d+ - rid:\\d+ - Router connection closed`,
    'g',
  );
  return (logOf(s).match(re) ?? []).length;
}

/**
 * Start a nats-server in h4 that tries to join the cluster: routes to all three members, with
 * `tls` as its route TLS (none: plain routes). Resolves once it answers on its monitoring port.
 */
async function candidate(name: string, tls: CertFiles | undefined): Promise<HostProcess> {
  const h4 = tb.host(4);
  const route = (h: string): string => `"nats-route://${h}:${NATS_PORTS.route}"`;
  const text = [
    `server_name: "${name}"`,
    `listen: "${h4.address}:${NATS_PORTS.client}"`,
    `http: "${h4.address}:${NATS_PORTS.monitor}"`,
    `cluster {`,
    `  name: "${tb.runId}"`,
    `  listen: "${h4.address}:${NATS_PORTS.route}"`,
    `  routes: [${servers.map((s) => route(s.host!.address)).join(', ')}]`,
    ...(tls
      ? [
          `  tls {`,
          `    ca_file: "${tls.caFile}"`,
          `    cert_file: "${tls.certFile}"`,
          `    key_file: "${tls.keyFile}"`,
          `    timeout: 2`,
          `  }`,
        ]
      : []),
    `}`,
    ``,
  ].join('\n');
  writeFileSync(join(h4.stateDir, `${name}.conf`), text);
  const p = await h4.spawn(['nats-server', '-c', `/srv/${name}.conf`], { name });
  const self = { monitorUrl: `http://${h4.address}:${NATS_PORTS.monitor}` } as NatsServer;
  await waitFor(
    async () => (await monitor<{ server_name: string }>(self, '/varz')).server_name === name,
    15_000,
  );
  return p;
}

async function stop(p: HostProcess): Promise<void> {
  p.kill('SIGKILL');
  await p.exited;
}

/**
 * Start a candidate, wait until every member has refused at least two of its route connections
 * (it retries each second), and check that no member gained a route and that it has none.
 */
async function assertRefused(name: string, tls: CertFiles | undefined): Promise<void> {
  const h4 = tb.host(4).address;
  const before = servers.map((s) => closedRoutesFrom(s, h4));
  const p = await candidate(name, tls);
  try {
    await waitFor(
      async () => servers.every((s, i) => closedRoutesFrom(s, h4) >= (before[i] ?? 0) + 2),
      20_000,
    ).catch(async (err: unknown) => {
      const counts = await routeCounts().catch(() => []);
      throw new Error(
        `${name}: the members did not close its routes (routes per member: ${counts.join(', ')}; ` +
          `more than 2 means it was admitted): ${String(err)}`,
      );
    });
    assert.deepEqual(await routeCounts(), [2, 2, 2], `${name} was admitted as a route`);
    const self = { monitorUrl: `http://${h4}:${NATS_PORTS.monitor}` } as NatsServer;
    assert.equal(await routeCount(self), 0, `${name} has a route into the cluster`);
  } finally {
    await stop(p);
  }
}

describe('a secure NATS cluster', () => {
  test('forms with TLS routes, and an R3 bucket works through it with a controller certificate', async () => {
    await waitFor(async () => (await routeCounts()).every((n) => n === 2), 20_000);
    // Routes first, then JetStream's meta group: an R3 stream is placed only once every member
    // knows all three peers and a leader ("no suitable peers for placement" before that).
    for (const s of servers) {
      await waitFor(async () => {
        const jsz = await monitor<{ meta_cluster?: { leader?: string; cluster_size?: number } }>(
          s,
          '/jsz',
        );
        return jsz.meta_cluster?.cluster_size === 3 && Boolean(jsz.meta_cluster.leader);
      }, 20_000);
    }
    for (const s of servers) {
      const varz = await monitor<{
        tls_required: boolean;
        tls_verify: boolean;
        cluster: { tls_required: boolean; tls_verify: boolean };
      }>(s, '/varz');
      assert.equal(varz.tls_required, true, `${s.name}: client TLS`);
      assert.equal(varz.cluster.tls_required, true, `${s.name}: route TLS`);
      assert.equal(varz.cluster.tls_verify, true, `${s.name}: route peers verified`);
    }
    // No client without a certificate gets in, at any member.
    for (const s of servers)
      await assert.rejects(Bus.connect({ servers: [s.url], name: 'stranger' }));

    const bus = await Bus.connect({
      servers: [...tb.nats!.urls],
      name: 'runner',
      tls: tb.certs!.runner,
    });
    open.push(bus);
    const kv = await StateStore.open<{ n: number }>(bus, { bucket: 'tls_r3', replicas: 3 });
    await kv.put('k', { n: 1 });
    await kv.put('k', { n: 2 });
    // Three copies, one on every member (each member's /jsz lists the streams it holds).
    for (const s of servers) {
      await waitFor(async () => {
        const jsz = await monitor<{
          account_details?: { stream_detail?: { name: string; state: { messages: number } }[] }[];
        }>(s, '/jsz?accounts=true&streams=true');
        const streams = (jsz.account_details ?? []).flatMap((a) => a.stream_detail ?? []);
        return streams.some((d) => d.name === 'KV_tls_r3' && d.state.messages >= 1);
      }, 10_000);
    }
    // Read through the third member alone, as the controller.
    const third = await Bus.connect({
      servers: [servers[2]!.url],
      name: 'controller',
      tls: tb.certs!.controller,
    });
    open.push(third);
    const kv3 = await StateStore.open<{ n: number }>(third, { bucket: 'tls_r3' });
    assert.deepEqual((await kv3.get('k'))?.value, { n: 2 });
  });

  test('a nats-server without route TLS is not admitted', async () => {
    await assertRefused('plain', undefined);
  });

  test('a forged route certificate of another CA is not admitted', async () => {
    // The same subject and addresses as a real route certificate, signed by another CA; the
    // candidate trusts the real CA, so only the members' check of its certificate can refuse it.
    // In the shared directory: the candidate's host sees nothing else of the run's (its own disk).
    const other = join(tb.sharedDir, 'other-ca');
    await initCa(other);
    const forged = await issueNatsNode(other, tb.runId, {
      name: 'h4',
      addresses: [tb.host(4).address],
    });
    await assertRefused('forged', { ...forged, caFile: tb.certs!.runner.caFile });
  });

  test("an agent's certificate of the same CA does not make a route", async () => {
    await assertRefused('agent-cert', tb.certs!.identity('agent', 'h4'));
  });

  test('a plain TCP connection to a route port is dropped', async () => {
    const h1 = servers[0]!.host!;
    const t0 = Date.now();
    const got = await new Promise<{ data: string; closed: boolean }>((resolve) => {
      let data = '';
      const s = connect({ host: h1.address, port: NATS_PORTS.route });
      const timer = setTimeout(() => {
        s.destroy();
        resolve({ data, closed: false });
      }, 10_000);
      // What a route sends once connected (over TLS it would follow the handshake): on a plain
      // route port without authorization this makes the sender a route, answered with a PONG.
      const hello = { verbose: false, pedantic: false, tls_required: false, name: 'intruder' };
      s.on('connect', () =>
        s.write(
          `CONNECT ${JSON.stringify({ ...hello, cluster: tb.runId, headers: true })}\r\nPING\r\n`,
        ),
      );
      s.on('data', (c) => (data += c.toString()));
      s.on('error', () => {});
      s.on('close', () => {
        clearTimeout(timer);
        resolve({ data, closed: true });
      });
    });
    assert.equal(got.closed, true, `the route port kept a plain connection open: ${got.data}`);
    assert.ok(Date.now() - t0 < 10_000);
    // Not a byte of the NATS protocol in the clear (a TLS route port handshakes first), and no
    // PONG: the sender never became a route.
    assert.equal(got.data, '', 'the route port answered in the clear');
    assert.deepEqual(await routeCounts(), [2, 2, 2]);
  });

  test('a nats-server with a route certificate of this CA is admitted (the checks above can fail)', async () => {
    const dir = join(tb.runDir, 'certs');
    const node = await issueNatsNode(dir, tb.runId, {
      name: 'h4',
      addresses: [tb.host(4).address],
    });
    assert.equal(node.certFile, serverPaths(dir, 'h4').certFile);
    const p = await candidate('member', node);
    try {
      await waitFor(async () => (await routeCounts()).every((n) => n === 3), 20_000);
    } finally {
      await stop(p);
    }
  });
});
