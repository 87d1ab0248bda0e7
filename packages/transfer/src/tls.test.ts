/**
 * Mutual-TLS tests with a throwaway CA made by the openssl CLI: who gets in (the source agent the
 * stream was expected from), who does not (no, foreign or non-agent certificates, other agents).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { jsonLogger } from '@drover/common';
import { TransferError } from './errors.js';
import { StreamClient, clientSecureContext, type ClientTlsOptions } from './client.js';
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
/** Subject of a Drover identity (as `drover certs` issues them). */
const drover = (role: string, name: string): string => `/O=drover/OU=${role}/CN=${name}`;
function makeLeaf(ca: string, name: string, ext: string, subject = `/CN=${name}`): void {
  writeFileSync(join(pki, `${name}.ext`), ext);
  openssl('req', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject);
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
  const both = 'extendedKeyUsage=clientAuth,serverAuth\n';
  // Agents' certificates name hosts, not addresses (no subjectAltName): the identity is checked.
  makeLeaf('drover-ca', 'server', both, drover('agent', 'h2'));
  makeLeaf('drover-ca', 'agent-a', both, drover('agent', 'h1'));
  makeLeaf('drover-ca', 'agent-c', both, drover('agent', 'h3'));
  makeLeaf('drover-ca', 'operator', 'extendedKeyUsage=clientAuth\n', drover('operator', 'alice'));
  makeLeaf('drover-ca', 'plain', both, '/CN=h1');
  makeLeaf('rogue-ca', 'intruder', both, drover('agent', 'h1'));
});
after(() => removeAll(pki));

const serverTls = (): ServerTlsOptions => ({
  key: pem('server.key'),
  cert: pem('server.crt'),
  ca: pem('drover-ca.crt'),
  requestCert: true,
});
const clientTls = (leaf: string, peer = 'h2'): ClientTlsOptions => ({
  key: pem(`${leaf}.key`),
  cert: pem(`${leaf}.crt`),
  ca: pem('drover-ca.crt'),
  peer,
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
      const outcome = expectInto(server, 'mig-tls', 'tok', dst, { peer: 'h1' });

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

test(
  'a CA-signed certificate that is not the expected source agent is refused; the expectation stays',
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
    const base = { ...server.address(), migrationId: 'mig-id', token: 'tok' };
    try {
      writeFileSync(join(src, 'core-1.img'), 'core');
      const outcome = expectInto(server, 'mig-id', 'tok', dst, { peer: 'h1' });
      // Refused before HELLO: an operator's certificate, and one without a Drover subject.
      for (const leaf of ['operator', 'plain']) {
        const err = await StreamClient.connect({ ...base, tls: clientTls(leaf) }).then(
          () => assert.fail(`${leaf}: accepted`),
          (e: unknown) => e,
        );
        assert.ok(err instanceof TransferError, `${leaf}: ${String(err)}`);
        assert.equal(err.details['remoteKind'], 'auth', `${leaf}: ${err.message}`);
        assert.match(err.message, /not a Drover agent/);
        t.diagnostic(`${leaf}: ${err.message}`);
      }
      assert.ok(!lines.some((l) => l.includes('transfer refused: unknown')), 'no HELLO was read');
      // Another agent (h3) with the right migration id and token: refused after HELLO.
      const err = await StreamClient.connect({ ...base, tls: clientTls('agent-c') }).then(
        () => assert.fail('h3 accepted'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof TransferError);
      assert.equal(err.details['remoteKind'], 'auth', err.message);
      assert.ok(
        lines.some((l) => l.includes('"agent":"h3"')),
        lines.join(''),
      );
      assert.deepEqual(await readdir(dst), []);
      // The right agent with a wrong token: refused too, and nothing is consumed.
      await assert.rejects(
        StreamClient.connect({ ...base, token: 'bad', tls: clientTls('agent-a') }),
        TransferError,
      );
      const client = await StreamClient.connect({ ...base, tls: clientTls('agent-a') });
      await client.sendDirectory(src);
      await client.finish();
      assert.ok((await outcome).totals);
      assert.deepEqual(await hashTree(dst), await hashTree(src));
    } finally {
      await server.close();
      await removeAll(src, dst);
    }
  },
);

test('the client refuses a server that is not the destination agent', T, async () => {
  for (const [label, leaf, peer] of [
    ['another agent', 'agent-c', 'h2'],
    ['an operator', 'operator', 'h2'],
    ['no Drover subject', 'plain', 'h1'],
  ] as const) {
    const server = await StreamServer.listen({
      host: '127.0.0.1',
      port: 0,
      tls: { ...serverTls(), key: pem(`${leaf}.key`), cert: pem(`${leaf}.crt`) },
    });
    try {
      server.expect('mig-x', 'tok', () => assert.fail('handler must not run'));
      const err = await StreamClient.connect({
        ...server.address(),
        migrationId: 'mig-x',
        token: 'tok',
        tls: clientTls('agent-a', peer),
      }).then(
        () => assert.fail(`${label}: accepted`),
        (e: unknown) => e,
      );
      assert.ok(err instanceof TransferError, `${label}: ${String(err)}`);
      assert.equal(err.kind, 'auth', `${label}: ${err.message}`);
      // An operator's certificate is not even for servers (TLS refuses its purpose first).
      assert.match(err.message, /not agent h[12]'s|unsuitable certificate purpose/);
    } finally {
      await server.close();
    }
  }
});

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

test('streams reuse one TLS context until the identity or the revocation list changes', () => {
  const a = clientTls('agent-a');
  // Another peer, same files (strings equal by value): the same context; the peer is checked
  // per connection (the tests above).
  assert.equal(
    clientSecureContext(a),
    clientSecureContext({ ...clientTls('agent-a'), peer: 'h3' }),
  );
  const withCrl = { ...a, crl: '-----BEGIN X509 CRL-----\n' };
  assert.throws(() => clientSecureContext(withCrl), 'a new list is parsed (this one is broken)');
  assert.notEqual(clientSecureContext(clientTls('agent-c')), clientSecureContext(a));
});
