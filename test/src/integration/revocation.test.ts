/**
 * A revoked identity against a real nats-server and real agent-to-agent streams: after
 * `revokeIdentity` and a reload, NATS refuses the old certificate (its user is gone) and cuts
 * the connection it had, a stream
 * server given the new CRL refuses it as a client, and a client with the CRL refuses it as a
 * server; every other identity still gets in. No CRIU, no testbed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Bus } from '@drover/bus';
import {
  crlPath,
  identityPaths,
  initCluster,
  NATS_SECURITY_FILE,
  revokeIdentity,
  type CertFiles,
} from '@drover/certs';
import { jsonLogger } from '@drover/common';
import { StreamClient, StreamServer, TransferError } from '@drover/transfer';
import { freePort, sleep } from '../util/net.js';

describe('a revoked agent certificate', () => {
  let dir = '';
  let certs = '';
  let url = '';
  let server: ChildProcess | undefined;
  /** h1's certificate and key as they were before the revocation (what a removed host keeps). */
  let old: CertFiles;

  const connect = (files: CertFiles, name: string): Promise<Bus> =>
    Bus.connect({
      servers: [url],
      name,
      tls: files,
      requestTimeoutMs: 3000,
    });

  const pem = (files: CertFiles): { key: string; cert: string; ca: string } => ({
    key: readFileSync(files.keyFile, 'utf8'),
    cert: readFileSync(files.certFile, 'utf8'),
    ca: readFileSync(files.caFile, 'utf8'),
  });

  /** A stream from `client` (as the agent `from`) to `srv`; resolves true when accepted. */
  const streamAccepted = async (
    srv: StreamServer,
    client: CertFiles,
    peer: string,
    from: string,
    crl?: string,
  ): Promise<boolean> => {
    const migrationId = `mig-${Math.random().toString(36).slice(2, 8)}`;
    srv.expect(migrationId, 'tok', (r) => r.destroy(), { peer: from });
    try {
      const c = await StreamClient.connect({
        ...srv.address(),
        migrationId,
        token: 'tok',
        connectTimeoutMs: 3000,
        tls: { ...pem(client), peer, ...(crl !== undefined ? { crl } : {}) },
      });
      c.close();
      return true;
    } catch (err) {
      assert.ok(err instanceof TransferError, String(err));
      return false;
    } finally {
      srv.cancel(migrationId);
    }
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'drover-revoked-'));
    certs = join(dir, 'certs');
    await initCluster(certs, { serverAddresses: ['127.0.0.1'], agents: ['h1', 'h2', 'h3'] });
    const h1 = identityPaths(certs, { role: 'agent', name: 'h1' });
    old = {
      caFile: h1.caFile,
      certFile: join(dir, 'h1-old.crt'),
      keyFile: join(dir, 'h1-old.key'),
    };
    copyFileSync(h1.certFile, old.certFile);
    copyFileSync(h1.keyFile, old.keyFile);
    const port = await freePort();
    url = `tls://127.0.0.1:${port}`;
    writeFileSync(
      join(dir, 'nats.conf'),
      `listen: "127.0.0.1:${port}"\ninclude ./certs/${NATS_SECURITY_FILE}\n`,
    );
    server = spawn('nats-server', ['-c', join(dir, 'nats.conf')], { stdio: 'ignore' });
    for (let i = 0; ; i++) {
      try {
        await (await connect(identityPaths(certs, { role: 'agent', name: 'h2' }), 'probe')).close();
        break;
      } catch (err) {
        if (i > 100) throw err;
        await sleep(100);
      }
    }
  });

  after(() => {
    if (server?.pid) process.kill(server.pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('is refused by NATS once the server reloads the regenerated config', async () => {
    // A connection made before the revocation, as a running agent has: the reload cuts it.
    const lines: string[] = [];
    const before = await Bus.connect({
      servers: [url],
      name: 'h1 before',
      tls: old,
      logger: jsonLogger((l) => lines.push(l), { level: 'debug' }),
    });
    const r = await revokeIdentity(certs, { role: 'agent', name: 'h1' });
    assert.equal(r.natsUser, 'CN=h1,OU=agent,O=drover');
    process.kill(server!.pid!, 'SIGHUP');
    let refused: unknown = null;
    for (let i = 0; i < 50 && refused === null; i++) {
      await sleep(100);
      refused = await connect(old, 'h1 after').then(
        async (b) => {
          await b.close();
          return null;
        },
        (err: unknown) => err,
      );
    }
    assert.ok(refused !== null, 'NATS still lets the revoked certificate in');
    for (let i = 0; i < 50 && !lines.some((l) => l.includes('"type":"disconnect"')); i++)
      await sleep(100);
    assert.ok(
      lines.some((l) => l.includes('"type":"disconnect"')),
      `the connection made before the revocation was not cut:\n${lines.join('')}`,
    );
    await before.close().catch(() => undefined);
    assert.match(String(refused), /authoriz|permission|denied|closed/i);
    // Everyone else still connects.
    await (await connect(identityPaths(certs, { role: 'agent', name: 'h2' }), 'h2')).close();
  });

  it('is refused by a stream server and by a stream client that have the CRL', async () => {
    const h2 = identityPaths(certs, { role: 'agent', name: 'h2' });
    const h3 = identityPaths(certs, { role: 'agent', name: 'h3' });
    const crl = readFileSync(crlPath(certs), 'utf8');
    // A destination agent (h2) that has not read the new CRL yet still lets h1 in...
    const dst = await StreamServer.listen({ host: '127.0.0.1', port: 0, tls: pem(h2) });
    const src = await StreamServer.listen({ host: '127.0.0.1', port: 0, tls: pem(old) });
    try {
      assert.equal(await streamAccepted(dst, old, 'h2', 'h1'), true, 'before the CRL');
      // ...and refuses it once it has (what crl-watch.ts does when the file changes).
      dst.setCrl(crl);
      assert.equal(await streamAccepted(dst, old, 'h2', 'h1'), false, 'revoked client');
      assert.equal(await streamAccepted(dst, h3, 'h2', 'h3'), true, 'h3 still gets in');
      // A source agent (h3) with the CRL refuses a revoked destination.
      assert.equal(await streamAccepted(src, h3, 'h1', 'h3'), true, 'without the CRL');
      assert.equal(await streamAccepted(src, h3, 'h1', 'h3', crl), false, 'revoked server');
      dst.setCrl(null);
      assert.equal(await streamAccepted(dst, old, 'h2', 'h1'), true, 'CRL withdrawn');
    } finally {
      await dst.close();
      await src.close();
    }
  });
});
