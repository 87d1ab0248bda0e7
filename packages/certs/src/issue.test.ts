import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDroverError } from '@drover/common';
import {
  identityOfCertificate,
  identityPaths,
  initCa,
  initCluster,
  initNatsCluster,
  issueIdentity,
  listIdentities,
  NATS_CLUSTER_FILE,
  natsNodeConfigPath,
  readNatsCluster,
  serverPaths,
  writeNatsConfigs,
} from './mod.js';

/** openssl's view of a certificate: subject, SANs and extended key usage. */
function x509(certFile: string): string {
  return execFileSync('openssl', [
    'x509',
    '-in',
    certFile,
    '-noout',
    '-subject',
    '-nameopt',
    'RFC2253',
    '-ext',
    'subjectAltName,extendedKeyUsage',
  ]).toString();
}

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

  it('issues a route certificate and a TLS-only cluster config per NATS node', async () => {
    const base = mkdtempSync(join(tmpdir(), 'drover-pki-'));
    const dir = join(base, 'certs');
    const nodes = [
      { name: 'n1', addresses: ['10.0.0.5', 'n1.example'] },
      { name: 'n2', addresses: ['10.0.0.6'] },
      { name: 'n3', addresses: ['10.0.0.7'] },
    ];
    try {
      await initCluster(dir, {
        serverAddresses: [],
        agents: ['h1'],
        natsCluster: { name: 'prod', nodes },
      });
      // No single-server certificate was asked for.
      assert.equal(existsSync(serverPaths(dir).certFile), false);
      for (const n of nodes) {
        const files = serverPaths(dir, n.name);
        execFileSync('openssl', ['verify', '-CAfile', files.caFile, files.certFile]);
        const text = x509(files.certFile);
        // One subject for every node (NATS 2.9 maps routes to one user), its own addresses.
        assert.match(text, /subject=CN=prod,OU=nats-route,O=drover/);
        assert.match(text, new RegExp(`IP Address:${n.addresses[0]?.replaceAll('.', '\\.')}`));
        assert.match(text, /DNS:localhost/);
        assert.match(text, /TLS Web Server Authentication, TLS Web Client Authentication/);
        for (const other of nodes.filter((o) => o !== n))
          assert.doesNotMatch(text, new RegExp(`${other.addresses[0]?.replaceAll('.', '\\.')}\\b`));
        assert.equal(statSync(files.keyFile).mode & 0o777, 0o600);
        const conf = readFileSync(natsNodeConfigPath(dir, n.name), 'utf8');
        assert.equal(statSync(natsNodeConfigPath(dir, n.name)).mode & 0o777, 0o600);
        // The client tls and the route tls both use the node's own certificate.
        assert.equal(conf.split(`cert_file: "${files.certFile}"`).length, 3);
        assert.match(conf, /user: "CN=h1,OU=agent,O=drover"/);
        assert.match(conf, new RegExp(`listen: "${n.addresses[0]?.replaceAll('.', '\\.')}:6222"`));
        const routes = conf.match(/nats-route:\/\/[^"]+/g) ?? [];
        assert.deepEqual(
          routes,
          nodes.filter((o) => o !== n).map((o) => `nats-route://${o.addresses[0]}:6222`),
        );
        assert.match(
          conf,
          /cluster \{[\s\S]*verify_and_map: true[\s\S]*user: "CN=prod,OU=nats-route,O=drover"/,
        );
      }
      assert.deepEqual(await readNatsCluster(dir), { name: 'prod', nodes, routePort: 6222 });
      // A new identity reaches every node's config.
      await issueIdentity(dir, { role: 'agent', name: 'h2' });
      assert.deepEqual(
        await writeNatsConfigs(dir),
        nodes.map((n) => natsNodeConfigPath(dir, n.name)),
      );
      for (const n of nodes)
        assert.match(readFileSync(natsNodeConfigPath(dir, n.name), 'utf8'), /CN=h2,OU=agent/);
      // A second cluster in the same directory would replace the nodes' keys: refused.
      await assert.rejects(
        initNatsCluster(dir, { name: 'prod', nodes }),
        /already has a NATS cluster/,
      );
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  it('refuses a bad cluster before writing anything', async () => {
    const base = mkdtempSync(join(tmpdir(), 'drover-pki-'));
    try {
      const bad = [
        [{ name: 'prod', nodes: [{ name: 'n1', addresses: ['10.0.0.5'] }] }, /at least 2 nodes/],
        [
          {
            name: 'prod',
            nodes: [
              { name: 'n1', addresses: ['10.0.0.5'] },
              { name: 'n1', addresses: ['10.0.0.6'] },
            ],
          },
          /twice/,
        ],
        [
          {
            name: 'prod',
            nodes: [
              { name: 'nats', addresses: ['10.0.0.5'] },
              { name: 'n2', addresses: ['10.0.0.6'] },
            ],
          },
          /may not be named nats/,
        ],
        [
          {
            name: 'p.q',
            nodes: [
              { name: 'n1', addresses: ['10.0.0.5'] },
              { name: 'n2', addresses: ['10.0.0.6'] },
            ],
          },
          /cluster name/,
        ],
        [
          {
            name: 'prod',
            nodes: [
              { name: 'n1', addresses: [] },
              { name: 'n2', addresses: ['10.0.0.6'] },
            ],
          },
          /needs an address/,
        ],
        [
          {
            name: 'prod',
            routePort: 70000,
            nodes: [
              { name: 'n1', addresses: ['10.0.0.5'] },
              { name: 'n2', addresses: ['10.0.0.6'] },
            ],
          },
          /route port/,
        ],
      ] as const;
      for (const [natsCluster, message] of bad) {
        const dir = join(base, 'certs');
        await assert.rejects(
          initCluster(dir, { serverAddresses: [], natsCluster }),
          (err: unknown) => {
            assert.ok(isDroverError(err, 'INVALID_ARGUMENT'), String(err));
            assert.match(err.message, message);
            return true;
          },
        );
        assert.equal(existsSync(dir), false, 'nothing written');
        assert.equal(existsSync(join(dir, NATS_CLUSTER_FILE)), false);
      }
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
