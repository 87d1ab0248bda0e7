/**
 * Migration streams under attack, end to end: on a secure testbed (agents' streams use mutual
 * TLS with their agent certificates) a slowed migration is in flight while strangers connect to
 * the destination's stream port — plain TCP, a certificate of another CA, a valid certificate that
 * is not an agent's, and a third agent with a wrong token. Each is refused before a byte of image
 * is read, and the migration completes: the job verifies itself on the destination, same PIDs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import type { JobInfo, MigrationRecord } from '@drover/protocol';
import { StreamClient, TransferError, type ClientTlsOptions } from '@drover/transfer';
import { AGENT_STREAM_PORT, AgentCluster, Testbed, type AgentHandle } from '@drover/testbed';
import { makeCert } from '../cluster/certs.js';
import { requestVerdict, waitReady, workloadCommand } from '../workloads/mod.js';
import { innerPids, JOB_ENV, settledPids, signaller, sleep, waitFor } from './helpers.js';

let tb: Testbed;
let cluster: AgentCluster;
let shared: string;

before(async () => {
  tb = await Testbed.create({ hosts: 3, nats: 'single', secure: true });
  shared = join(tb.runDir, 'shared');
  mkdirSync(shared, { recursive: true });
  cluster = await AgentCluster.start(tb);
});

after(async () => {
  await cluster?.close();
  await tb?.teardown();
});

const agent = (name: string): AgentHandle => cluster.agent(name);

/** TLS options from certificate files; the server must be agent h2 (the destination). */
function tlsFrom(files: { caFile: string; certFile: string; keyFile: string }): ClientTlsOptions {
  return {
    key: readFileSync(files.keyFile, 'utf8'),
    cert: readFileSync(files.certFile, 'utf8'),
    // Trust the testbed's CA, so the server side of the handshake is never what fails.
    ca: readFileSync(tb.certs!.identity('agent', 'h2').caFile, 'utf8'),
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
    const h2 = tb.host('h2');
    // ~96 MiB of job memory at 8 MB/s: the stream is in flight for several seconds.
    await agent('h1').restartWith({ DROVER_FAULT: 'throttle=8000000' });
    let job: JobInfo | null = null;
    try {
      const dir = join(shared, 'stream-attack');
      mkdirSync(dir, { recursive: true });
      job = await agent('h1').client.call('run', {
        command: workloadCommand('memory', { dir, mb: 96 }),
        env: JOB_ENV,
        name: 'stream-attack',
      });
      await waitReady(dir, 30_000);
      const pids = await innerPids(agent('h1'), job.id);
      const id = job.id;
      const migrating = cluster.migrate(id, 'h1', 'h2', { timeoutMs: 180_000 });
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
      const rogue = makeCert(join(tb.runDir, 'rogue-ca'), 'h1', h2.address);
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
      const op = await refused('(c) operator', tlsFrom(tb.certs!.operator));
      assert.equal(op.details['remoteKind'], 'auth', op.message);
      assert.match(op.message, /not a Drover agent/);

      // (d) A valid agent certificate of a third host, naming the in-flight migration, wrong token.
      const third = await refused('(d) agent h3', tlsFrom(tb.certs!.identity('agent', 'h3')));
      assert.equal(third.details['remoteKind'], 'auth', third.message);

      // Every refusal happened while the migration was still streaming...
      assert.equal((await migrationOf('h1', id))?.state, 'transferring');
      // ...and the destination logged each one (TLS refusals, the operator, h3's HELLO).
      const log = agent('h2').process!.output().slice(logBefore);
      assert.match(log, /TLS handshake refused/);
      assert.match(log, /not a Drover agent's \(operator operator\)/);
      assert.match(log, /"agent":"h3"/);

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
