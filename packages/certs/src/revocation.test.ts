/**
 * Tests of revocation against the real openssl: the revoked certificate is in the CRL (openssl
 * verify refuses it, accepts the others), its key is gone, and the NATS config has no user for it.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDroverError } from '@drover/common';
import { natsUserOf } from '@drover/protocol';
import {
  caPaths,
  crlPath,
  identityPaths,
  initCluster,
  listRevoked,
  NATS_SECURITY_FILE,
  revokeIdentity,
} from './mod.js';

/** `openssl verify` with the CRL: its exit code and output. */
function verify(dir: string, certFile: string): { ok: boolean; out: string } {
  const r = spawnSync(
    'openssl',
    ['verify', '-crl_check', '-CAfile', caPaths(dir).certFile, '-CRLfile', crlPath(dir), certFile],
    { encoding: 'utf8' },
  );
  return { ok: r.status === 0, out: r.stdout + r.stderr };
}

describe('revocation', () => {
  it('revokes an agent: in the CRL, certificate moved, key gone, no NATS user', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'drover-revoke-')), 'certs');
    try {
      await initCluster(dir, { serverAddresses: ['127.0.0.1'], agents: ['h1', 'h2'] });
      const h1 = identityPaths(dir, { role: 'agent', name: 'h1' });
      const h2 = identityPaths(dir, { role: 'agent', name: 'h2' });
      // A fresh directory has an empty CRL that refuses nothing.
      assert.equal(verify(dir, h1.certFile).ok, true, verify(dir, h1.certFile).out);
      const old = readFileSync(h1.certFile);
      const userOf1 = natsUserOf({ role: 'agent', name: 'h1' });
      assert.ok(readFileSync(join(dir, NATS_SECURITY_FILE), 'utf8').includes(userOf1));

      const r = await revokeIdentity(dir, { role: 'agent', name: 'h1' });
      assert.equal(r.natsUser, userOf1);
      assert.equal(existsSync(h1.certFile), false);
      assert.equal(existsSync(h1.keyFile), false);
      const kept = join(dir, 'revoked', `agent.h1.${r.serial}.crt`);
      assert.deepEqual(readFileSync(kept), old);
      const v = verify(dir, kept);
      assert.equal(v.ok, false);
      assert.match(v.out, /certificate revoked/);
      assert.equal(verify(dir, h2.certFile).ok, true);
      const crl = execFileSync('openssl', ['crl', '-in', crlPath(dir), '-noout', '-text'], {
        encoding: 'utf8',
      });
      assert.match(crl.replace(/:/g, ''), new RegExp(`Serial Number ${r.serial}`, 'i'));
      const conf = readFileSync(join(dir, NATS_SECURITY_FILE), 'utf8');
      assert.equal(conf.includes(userOf1), false, 'the revoked identity has no NATS user');
      assert.ok(conf.includes(natsUserOf({ role: 'agent', name: 'h2' })));
      assert.ok(r.natsConfigs.includes(join(dir, NATS_SECURITY_FILE)));
      const listed = await listRevoked(dir);
      assert.equal(listed.length, 1);
      assert.equal(listed[0]!.serial, r.serial);
      assert.deepEqual(listed[0]!.identity, { role: 'agent', name: 'h1' });
      assert.ok(Math.abs(Date.parse(listed[0]!.revokedAt) - Date.now()) < 120_000);
      // Nothing left to revoke: a typed refusal.
      await assert.rejects(revokeIdentity(dir, { role: 'agent', name: 'h1' }), (err: unknown) => {
        assert.ok(isDroverError(err, 'NOT_FOUND'), String(err));
        return true;
      });
      assert.deepEqual(
        readdirSync(join(dir, 'revoked')).filter((f) => f.startsWith('.')),
        [],
        'no temporary files left',
      );
    } finally {
      rmSync(join(dir, '..'), { recursive: true, force: true });
    }
  });
});
