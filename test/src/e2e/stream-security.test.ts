/**
 * Migration channels under attack, end to end, on a secure testbed (agents' streams use mutual
 * TLS with their agent certificates; CRIU's page channel uses CRIU's TLS with them too):
 * - strangers at the destination's stream port — plain TCP, a certificate of another CA, a valid
 *   certificate that is not an agent's, a third agent with a wrong token — while the stream is in
 *   flight: each is refused before a byte of image is read;
 * - strangers at the destination's page server while the pages are in flight — the runner, a
 *   third agent's certificate, the operator's: each is refused;
 * - a capture of the wire during stop-copy and post-copy moves holds no page of the job's memory
 *   in plaintext.
 * Each time the migration completes: the job verifies itself on the destination, same PIDs.
 * Last, a revoked agent certificate is refused at the TLS handshake once the CRL changes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { revokeIdentity } from '@drover/certs';
import type { JobInfo, MigrationRecord } from '@drover/protocol';
import { StreamClient, TransferError, type ClientTlsOptions } from '@drover/transfer';
import { AGENT_STREAM_PORT, type AgentHandle } from '@drover/testbed';
import { ClusterFixture } from '../cluster/fixture.js';
import { makeCert } from '../cluster/certs.js';
import { requestVerdict, waitReady, workloadCommand } from '../workloads/mod.js';
import {
  innerPids,
  JOB_ENV,
  settledPids,
  signaller,
  sleep,
  streamRefusal,
  waitFor,
  waitForLog,
  waitForValue,
} from './helpers.js';

let f: ClusterFixture;
let shared: string;

before(async () => {
  f = await ClusterFixture.start({ hosts: 3, secure: true, controller: false });
  shared = join(f.runDir, 'shared');
  mkdirSync(shared, { recursive: true });
});

after(async () => {
  await f?.stop();
});

const agent = (name: string): AgentHandle => f.agent(name);

/** TLS options from certificate files; the server must be agent h2 (the destination). */
function tlsFrom(files: { caFile: string; certFile: string; keyFile: string }): ClientTlsOptions {
  return {
    key: readFileSync(files.keyFile, 'utf8'),
    cert: readFileSync(files.certFile, 'utf8'),
    // Trust the testbed's CA, so the server side of the handshake is never what fails.
    ca: readFileSync(f.tb.certs!.identity('agent', 'h2').caFile, 'utf8'),
    peer: 'h2',
  };
}

/** Connect plain TCP and send bytes; resolves with what came back once the server closed. */
function plainTcp(host: string, port: number, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    const socket = net.connect({ host, port }, () => socket.write(payload));
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('the server kept a plain TCP connection open for 15 s'));
    }, 15_000);
    socket.on('data', (d: Buffer) => got.push(d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(got));
    });
  });
}

/** The one migration of `jobId` that `host` records. */
async function migrationOf(host: string, jobId: string): Promise<MigrationRecord | undefined> {
  const { migrations } = await agent(host).client.call('migrations-list', {});
  return migrations.find((m) => m.jobId === jobId);
}

describe('stream endpoint security', () => {
  test('strangers are refused at the destination stream port while a migration completes', async (t) => {
    const h2 = f.tb.host('h2');
    // The pages go CRIU to CRIU; the stream carries the small images and the job's directory:
    // 48 MB of it at 8 MB/s keep the stream in flight for several seconds.
    await agent('h1').restartWith({ DROVER_FAULT: 'throttle=8000000' });
    let job: JobInfo | null = null;
    try {
      const dir = join(shared, 'stream-attack');
      mkdirSync(dir, { recursive: true });
      job = await agent('h1').client.call('run', {
        command: [
          '/bin/sh',
          '-c',
          'head -c 48000000 /dev/urandom > "$DROVER_JOB_DIR/blob" && exec "$@"',
          'sh',
          ...workloadCommand('memory', { dir, mb: 32 }),
        ],
        env: JOB_ENV,
        name: 'stream-attack',
      });
      await waitReady(dir, 30_000);
      const pids = await innerPids(agent('h1'), job.id);
      const id = job.id;
      const migrating = f.agents.migrate(id, 'h1', 'h2', { timeoutMs: 180_000 });
      migrating.catch(() => undefined);
      await waitFor(async () => (await migrationOf('h1', id))?.state === 'transferring', 60_000);
      const migrationId = (await migrationOf('h1', id))!.migrationId;
      // The destination's own record: it is receiving this migration's stream right now.
      await waitFor(async () => (await migrationOf('h2', id))?.state === 'receiving', 10_000);
      const base = {
        host: h2.address,
        port: AGENT_STREAM_PORT,
        migrationId,
        token: 'f'.repeat(64),
        connectTimeoutMs: 5000,
      };
      const logBefore = agent('h2').process!.output().length;

      // (a) Plain TCP with bytes that look like a HELLO: closed, never an ACCEPT.
      const hello = Buffer.from(JSON.stringify({ migrationId, token: base.token, version: 1 }));
      const back = await plainTcp(h2.address, AGENT_STREAM_PORT, hello);
      assert.ok(
        back.length === 0 || back[0] === 0x15,
        `plain TCP got something other than a TLS alert: ${back.subarray(0, 32).toString('hex')}`,
      );
      t.diagnostic(`(a) plain TCP: closed after ${back.length} bytes`);

      // (b) A certificate of another CA (an agent subject, even: forged h1).
      const rogue = makeCert(join(f.tb.runDir, 'rogue-ca'), 'h1', h2.address);
      const refused = async (label: string, tls: ClientTlsOptions): Promise<TransferError> => {
        const err = await StreamClient.connect({ ...base, tls }).then(
          async (c) => {
            c.close();
            return assert.fail(`${label}: accepted`);
          },
          (e: unknown) => e,
        );
        assert.ok(err instanceof TransferError, `${label}: ${String(err)}`);
        const kind = err.kind === 'remote' ? err.details['remoteKind'] : err.kind;
        assert.ok(
          ['auth', 'link', 'truncated'].includes(String(kind)),
          `${label}: ${err.kind}/${String(kind)}: ${err.message}`,
        );
        t.diagnostic(`${label}: ${err.kind}: ${err.message}`);
        return err;
      };
      await refused('(b) another CA', tlsFrom(rogue));

      // (c) A valid certificate of the testbed's CA that is not an agent's: the operator's.
      // (Its usage is client-only, as an agent's client certificate is; the server refuses it
      // for not naming an agent, before any HELLO.)
      const op = await refused('(c) operator', tlsFrom(f.tb.certs!.operator));
      assert.equal(op.details['remoteKind'], 'auth', op.message);
      assert.match(op.message, /not a Drover agent/);

      // (d) A valid agent certificate of a third host, naming the in-flight migration, wrong token.
      const third = await refused('(d) agent h3', tlsFrom(f.tb.certs!.identity('agent', 'h3')));
      assert.equal(third.details['remoteKind'], 'auth', third.message);

      // Every refusal happened while the migration was still streaming...
      assert.equal((await migrationOf('h1', id))?.state, 'transferring');
      // ...and the destination logged each one (TLS refusals, the operator, h3's HELLO).
      await waitForLog(agent('h2'), logBefore, [
        /TLS handshake refused/,
        /not a Drover agent's \(operator operator\)/,
        /"agent":"h3"/,
      ]);

      // The migration completes; the job verifies itself on h2 with the same PIDs.
      const rec = await migrating;
      assert.equal(rec.state, 'done');
      assert.equal(rec.error, null);
      assert.deepEqual(
        await settledPids(() => innerPids(agent('h2'), id), pids),
        pids,
        'PIDs changed on h2',
      );
      const v = await requestVerdict(dir, signaller(agent('h2'), id), 30_000);
      assert.equal(v.ok, true, v.details);
      assert.equal((await agent('h1').client.call('inspect', { jobId: id })).state, 'migrated');
      await agent('h2').client.call('signal', { jobId: id, signal: 'SIGKILL' });
      job = null;
    } finally {
      await agent('h1').restartWith({});
      if (job) {
        for (const h of ['h1', 'h2']) {
          await agent(h)
            .client.call('signal', { jobId: job.id, signal: 'SIGKILL' })
            .catch(() => undefined);
        }
      }
      await sleep(100);
    }
  });
});

/**
 * The port of CRIU's page server in `host` receiving a migration's pages: its connection from
 * the source (it stops listening once the source is connected).
 */
async function pageServerPort(host: string): Promise<number> {
  const address = f.tb.host(host).address;
  return waitForValue(async () => {
    const r = await f.tb.host(host).exec(['ss', '-Htnp', 'state', 'established']);
    const line = r.stdout.split('\n').find((l) => /"criu"/.test(l) && l.includes(`${address}:`));
    const m = line ? new RegExp(`${address.replaceAll('.', '\\.')}:(\\d+)`).exec(line) : null;
    return m ? Number(m[1]) : undefined;
  }, 30_000);
}

/** A TLS client with `files` in host `from`, dialling `address:port`: what openssl says. */
async function openssl(
  from: string,
  files: { caFile: string; certFile: string; keyFile: string },
  address: string,
  port: number,
): Promise<string> {
  const r = await f.tb
    .host(from)
    .exec(
      [
        'openssl',
        's_client',
        '-connect',
        `${address}:${port}`,
        '-cert',
        files.certFile,
        '-key',
        files.keyFile,
        '-CAfile',
        files.caFile,
        '-brief',
      ],
      { input: '', timeoutMs: 15_000 },
    );
  return `exit ${r.code}: ${r.stdout}${r.stderr}`;
}

describe('page channel security', () => {
  test('strangers are refused at the page server while the pages are in flight', async (t) => {
    const h2 = f.tb.host('h2');
    // A slow link into h2 keeps the pages in flight for several seconds.
    await h2.limitIncoming(8_000_000);
    let job: JobInfo | null = null;
    try {
      const dir = join(shared, 'page-attack');
      mkdirSync(dir, { recursive: true });
      job = await agent('h1').client.call('run', {
        command: workloadCommand('memory', { dir, mb: 96 }),
        env: JOB_ENV,
        name: 'page-attack',
      });
      await waitReady(dir, 30_000);
      const pids = await innerPids(agent('h1'), job.id);
      const id = job.id;
      const migrating = f.agents.migrate(id, 'h1', 'h2', { timeoutMs: 180_000 });
      migrating.catch(() => undefined);
      await waitFor(async () => (await migrationOf('h1', id))?.state === 'dumping', 60_000);
      const port = await pageServerPort('h2');
      // (a) The runner (a stranger, no certificate): refused at once.
      const stranger = await new Promise<string>((resolve) => {
        const s = net.connect({ host: h2.address, port }, () => resolve('connected'));
        s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? String(e)));
      });
      assert.equal(stranger, 'ECONNREFUSED', `a stranger reached the page server: ${stranger}`);
      // (b) A third agent with its valid certificate, and (c) the operator's, from h3.
      for (const [label, files] of [
        ['agent h3', f.tb.certs!.identity('agent', 'h3')],
        ['operator', f.tb.certs!.operator],
      ] as const) {
        const said = await openssl('h3', files, h2.address, port);
        assert.match(said, /errno=111|Connection refused/i, `${label}: ${said}`);
        t.diagnostic(`${label}: ${said.split('\n')[0]}`);
      }
      // Every refusal happened while the pages were still in flight...
      assert.equal((await migrationOf('h1', id))?.state, 'dumping');
      // ...and the migration completes; the job verifies itself on h2 with the same PIDs.
      const rec = await migrating;
      assert.equal(rec.state, 'done');
      // The page server's port admits nobody any more (its admission goes after the restore).
      await waitFor(async () => {
        const r = await h2.exec(['nft', 'list', 'table', 'inet', 'drover_pages']);
        return r.code === 0 && !new RegExp(`\\b${port}\\b`).test(r.stdout);
      }, 15_000);
      assert.deepEqual(await settledPids(() => innerPids(agent('h2'), id), pids), pids);
      const v = await requestVerdict(dir, signaller(agent('h2'), id), 30_000);
      assert.equal(v.ok, true, v.details);
      await agent('h2').client.call('signal', { jobId: id, signal: 'SIGKILL' });
      job = null;
    } finally {
      await h2.limitIncoming(null);
      if (job) {
        for (const h of ['h1', 'h2']) {
          await agent(h)
            .client.call('signal', { jobId: job.id, signal: 'SIGKILL' })
            .catch(() => undefined);
        }
      }
    }
  });

  test('no page of a job crosses the wire in plaintext, stop-copy or post-copy', async (t) => {
    // The job's memory holds numbered canaries made at run time (its command holds only the
    // format); the capture of the testbed's network must hold the pages (its size says so) but
    // not one canary.
    const canary = (i: number): string => `DROVER-CANARY-${String(i).padStart(9, '0')}`;
    const program = [
      'import time',
      "x = bytearray(b''.join(('DROVER-CANARY-%09d' % i).encode() for i in range(1200000)))",
      'while True: time.sleep(0.1)',
    ].join('\n');
    const job = await agent('h1').client.call('run', {
      command: ['/usr/bin/python3', '-c', program],
      env: JOB_ENV,
      name: 'canary',
    });
    const pcap = join(shared, 'wire.pcap');
    const capture = spawn('tcpdump', ['-i', f.tb.bridge, '-U', '-s', '0', '-w', pcap], {
      stdio: 'ignore',
    });
    try {
      await sleep(2000);
      assert.equal(
        (await f.agents.migrate(job.id, 'h1', 'h2', { mode: 'stop-copy' })).state,
        'done',
      );
      assert.equal(
        (await f.agents.migrate(job.id, 'h2', 'h3', { mode: 'post-copy' })).state,
        'done',
      );
      await sleep(500);
    } finally {
      capture.kill('SIGINT');
      await new Promise((r) => capture.once('exit', r));
      await agent('h3')
        .client.call('signal', { jobId: job.id, signal: 'SIGKILL' })
        .catch(() => undefined);
    }
    const wire = readFileSync(pcap);
    // ~28 MB of canaries moved twice: the capture must have seen the pages go by.
    assert.ok(wire.length > 40_000_000, `the capture holds only ${wire.length} bytes`);
    for (const i of [0, 1, 4242, 600_000, 1_199_999])
      assert.equal(wire.indexOf(canary(i)), -1, `${canary(i)} crossed the wire in plaintext`);
    assert.equal(wire.indexOf('DROVER-CANARY-'), -1, 'a canary crossed the wire in plaintext');
    t.diagnostic(`captured ${Math.round(wire.length / 1048576)} MiB, no canary in it`);
  });
  // Last: it revokes h3 for the rest of this testbed.
  test('a revoked agent certificate is refused at the stream port once the CRL changes', async (t) => {
    /** How h2 refuses a stream from these files: after a HELLO (`remote`), or in TLS. */
    const refusal = (tls: ClientTlsOptions): Promise<TransferError> =>
      streamRefusal(f.tb.host('h2').address, tls);
    // What a removed host keeps: its certificate and key, read before the revocation.
    const old = tlsFrom(f.tb.certs!.identity('agent', 'h3'));
    const before = await refusal(old);
    assert.equal(before.kind, 'remote', `before: ${before.kind}: ${before.message}`);
    const logBefore = agent('h2').process!.output().length;
    const r = await revokeIdentity(f.tb.certs!.dir, { role: 'agent', name: 'h3' });
    t.diagnostic(`revoked h3 (serial ${r.serial})`);
    // h2's agent re-reads the CRL within its poll interval; then h3 no longer gets past TLS.
    const after = await waitForValue(async () => {
      const e = await refusal(old);
      return e.kind === 'remote' ? undefined : e;
    }, 15_000);
    t.diagnostic(`after: ${after.kind}: ${after.message}`);
    await waitForLog(agent('h2'), logBefore, [/revocation list changed/, /TLS handshake refused/]);
    // Another agent still gets as far as its HELLO.
    assert.equal((await refusal(tlsFrom(f.tb.certs!.identity('agent', 'h1')))).kind, 'remote');
  });
});
