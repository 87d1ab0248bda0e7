import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  identityOfCertificate,
  identityPaths,
  initCa,
  initCluster,
  issueIdentity,
  listIdentities,
  serverPaths,
} from './pki.js';

describe('pki', () => {
  it('issues a CA, a server and identities, private files only, verifiable by the CA', async () => {
    const base = mkdtempSync(join(tmpdir(), 'drover-pki-'));
    const dir = join(base, 'certs');
    try {
      await initCluster(dir, {
        serverAddresses: ['10.0.0.5', 'nats.example'],
        agents: ['h1'],
        operators: ['alice'],
        viewers: ['bob'],
      });
      assert.equal(statSync(dir).mode & 0o777, 0o700);
      const alice = identityPaths(dir, { role: 'operator', name: 'alice' });
      for (const f of [alice.keyFile, alice.certFile, join(dir, 'ca.key')])
        assert.equal(statSync(f).mode & 0o777, 0o600, f);
      assert.equal(statSync(join(dir, 'operator')).mode & 0o777, 0o700);
      execFileSync('openssl', ['verify', '-CAfile', alice.caFile, alice.certFile]);
      const server = execFileSync('openssl', [
        'x509',
        '-in',
        serverPaths(dir).certFile,
        '-noout',
        '-ext',
        'subjectAltName',
      ]).toString();
      assert.match(server, /IP Address:10\.0\.0\.5/);
      assert.match(server, /DNS:nats\.example/);
      assert.deepEqual(await identityOfCertificate(alice.certFile), {
        role: 'operator',
        name: 'alice',
      });
      assert.deepEqual(
        (await listIdentities(dir)).map((i) => `${i.role}/${i.name}`),
        ['controller/controller', 'agent/h1', 'operator/alice', 'viewer/bob'],
      );
      // A second CA in the same place would orphan every certificate: refused.
      await assert.rejects(initCa(dir), /already has a CA/);
      // Another CA's certificate does not verify against this one.
      const other = join(base, 'other');
      await initCa(other);
      const forged = await issueIdentity(other, { role: 'operator', name: 'alice' });
      assert.throws(() =>
        execFileSync('openssl', ['verify', '-CAfile', alice.caFile, forged.certFile], {
          stdio: 'pipe',
        }),
      );
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
