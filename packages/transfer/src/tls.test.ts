/** Mutual-TLS tests with a throwaway CA made by the openssl CLI: who gets in, who does not. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { jsonLogger } from '@drover/common';
import { TransferError } from './errors.js';
import { StreamClient, type ClientTlsOptions } from './client.js';
import { StreamServer, type ServerTlsOptions } from './server.js';
import { expectInto, hashTree, removeAll, tempDir, writeRandom } from './harness.js';

/** Every stream test is bounded: a hang is a failure, not a stuck run. */
const T = { timeout: 30_000 };
let pki = '';
const pem = (name: string): string => readFileSync(join(pki, name), 'utf8');
const openssl = (...args: string[]): void => {
  execFileSync('openssl', args, { cwd: pki, stdio: ['ignore', 'ignore', 'pipe'] });
};
const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A CA `ca` and, signed by it, a leaf `name` with the given extensions. */
function makeCa(ca: string): void {
  openssl(
    'req',
    '-x509',
    ...EC,
    '-keyout',
    `${ca}.key`,
    '-out',
    `${ca}.crt`,
    '-subj',
    `/CN=${ca}`,
    '-days',
    '1',
  );
}
function makeLeaf(ca: string, name: string, ext: string): void {
  writeFileSync(join(pki, `${name}.ext`), ext);
  openssl('req', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
  openssl(
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.crt`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-out',
    `${name}.crt`,
    '-days',
    '1',
    '-extfile',
    `${name}.ext`,
  );
}

before(async () => {
  pki = await tempDir('pki');
  makeCa('drover-ca');
  makeCa('rogue-ca');
  makeLeaf('drover-ca', 'server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  makeLeaf('drover-ca', 'agent-a', 'extendedKeyUsage=clientAuth\n');
  makeLeaf('rogue-ca', 'intruder', 'extendedKeyUsage=clientAuth\n');
});
after(() => removeAll(pki));

const serverTls = (): ServerTlsOptions => ({
  key: pem('server.key'),
  cert: pem('server.crt'),
  ca: pem('drover-ca.crt'),
  requestCert: true,
});
const clientTls = (leaf: string): ClientTlsOptions => ({
  key: pem(`${leaf}.key`),
  cert: pem(`${leaf}.crt`),
  ca: pem('drover-ca.crt'),
});

test(
  'mutual TLS: a client with a CA-signed cert transfers; certless and foreign ones are refused',
  T,
  async (t) => {
    const [src, dst] = [await tempDir('src'), await tempDir('dst')];
    const lines: string[] = [];
    const server = await StreamServer.listen({
      host: '127.0.0.1',
      port: 0,
      tls: serverTls(),
      logger: jsonLogger((l) => lines.push(l), { level: 'debug' }),
    });
    const base = { ...server.address(), migrationId: 'mig-tls', token: 'tok' };
    try {
      await writeRandom(join(src, 'pages-1.img'), 2 * 1024 * 1024 + 3);
      writeFileSync(join(src, 'core-1.img'), 'core');
      const outcome = expectInto(server, 'mig-tls', 'tok', dst);

      const { key: _k, cert: _c, ...caOnly } = clientTls('agent-a');
      for (const [label, tls] of [
        ['no client cert', caOnly as ClientTlsOptions],
        ['cert from another CA', { ...clientTls('intruder'), ca: pem('drover-ca.crt') }],
      ] as const) {
        const err = await StreamClient.connect({ ...base, tls, connectTimeoutMs: 3000 }).then(
          () => assert.fail(`${label}: accepted`),
          (e: unknown) => e,
        );
        assert.ok(err instanceof TransferError, `${label}: ${String(err)}`);
        assert.ok(['auth', 'link', 'truncated'].includes(err.kind), `${label}: kind ${err.kind}`);
        t.diagnostic(`${label}: ${err.kind}: ${err.message}`);
      }
      // Refused at the TLS layer: the server logged handshake refusals and never read a HELLO.
      const refusals = lines.filter((l) => l.includes('TLS handshake refused'));
      assert.equal(refusals.length, 2, lines.join(''));
      assert.ok(!lines.some((l) => l.includes('transfer refused')), 'no HELLO was processed');
      await assert.rejects(
        StreamClient.connect({ ...base, connectTimeoutMs: 3000 }),
        TransferError,
        'plain TCP to a TLS server',
      );
      assert.deepEqual(await readdir(dst), []);

      // The expectation is untouched: the legitimate agent gets in.
      const client = await StreamClient.connect({ ...base, tls: clientTls('agent-a') });
      await client.sendDirectory(src);
      assert.deepEqual(await client.finish(), {
        ok: true,
        totals: { files: 2, bytes: 2 * 1024 * 1024 + 7 },
      });
      assert.ok((await outcome).totals);
      assert.deepEqual(await hashTree(dst), await hashTree(src));
    } finally {
      await server.close();
      await removeAll(src, dst);
    }
  },
);

test('the client refuses a server whose cert is not signed by its CA', T, async () => {
  const server = await StreamServer.listen({
    host: '127.0.0.1',
    port: 0,
    tls: { ...serverTls(), key: pem('intruder.key'), cert: pem('intruder.crt') },
  });
  try {
    server.expect('mig-x', 'tok', () => assert.fail('handler must not run'));
    const err = await StreamClient.connect({
      ...server.address(),
      migrationId: 'mig-x',
      token: 'tok',
      tls: clientTls('agent-a'),
    }).then(
      () => assert.fail('accepted'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof TransferError);
    assert.equal(err.kind, 'auth', err.message);
    assert.equal(err.retryable, false);
  } finally {
    await server.close();
  }
});
