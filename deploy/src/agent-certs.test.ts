import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { identityOfCertificate, initCluster } from '@drover/certs';
import { isDroverError } from '@drover/common';
import { agentCertFiles, prepareCerts, requireSecurity } from './agent-certs.js';
import { DeployError } from './errors.js';
import { hostFiles } from './host-files.js';
import { compileInventory, type Inventory } from './inventory.js';

const FP = 'SHA256:SGYGLXhyo96W1vUlWY9xI5KnOtEUTsjMUeKAv/8lFhc';

function inventory(dir: string, extra: Record<string, unknown> = {}, h1 = '10.0.0.11'): Inventory {
  return compileInventory(
    {
      certs: 'certs',
      nats: { servers: ['nats://10.0.0.5:4222'], reload: `echo reloaded >> ${dir}/reloads` },
      hosts: [
        { name: 'h1', address: h1, hostKey: FP },
        { name: 'h2', address: 'h2.example', hostKey: FP, agent: { streamPort: 7171 } },
      ],
      ...extra,
    },
    join(dir, 'inv.yaml'),
  );
}

const reloads = (dir: string): number =>
  existsSync(join(dir, 'reloads'))
    ? readFileSync(join(dir, 'reloads'), 'utf8').split('\n').filter(Boolean).length
    : 0;

test('install/upgrade refuse without a certificates directory unless --insecure; not both', () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-sec-'));
  try {
    const plain = compileInventory(
      {
        nats: { servers: 'nats://10.0.0.5:4222' },
        hosts: [{ name: 'h1', address: 'a', hostKey: FP }],
      },
      join(dir, 'inv.yaml'),
    );
    assert.equal(plain.certs, null);
    assert.throws(
      () => requireSecurity(plain, false),
      (err: unknown) =>
        err instanceof DeployError &&
        err.failure === 'insecure' &&
        err.host === '*' &&
        /no certificates directory.*--certs DIR.*--insecure/s.test(err.message),
    );
    requireSecurity(plain, true);
    const secure = inventory(dir);
    assert.equal(secure.certs, join(dir, 'certs'), 'relative to the inventory');
    requireSecurity(secure, false);
    assert.throws(
      () => requireSecurity(secure, true),
      (err: unknown) =>
        isDroverError(err, 'INVALID_ARGUMENT') && /exclude each other/.test(err.message),
    );
    // --certs overrides the inventory, relative to the working directory.
    const over = compileInventory(
      { nats: { servers: 'nats://x:4222' }, hosts: [{ name: 'h1', address: 'a', hostKey: FP }] },
      join(dir, 'inv.yaml'),
      { certs: 'elsewhere' },
    );
    assert.equal(over.certs, join(process.cwd(), 'elsewhere'));
    // Files the deployer issues itself cannot also be given by hand.
    assert.throws(
      () =>
        inventory(dir, {
          nats: { servers: 'nats://x:4222', tls: { caFile: 'ca.pem' } },
          defaults: { agent: { streamTls: { caFile: 'a', certFile: 'b', keyFile: 'c' } } },
        }),
      (err: unknown) => {
        const problems = (isDroverError(err) ? err.details.problems : []) as string[];
        return (
          problems.some((p) => p.startsWith('nats.tls: not with `certs`')) &&
          problems.some((p) => p.includes('(h1).agent.streamTls: not with `certs`'))
        );
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('prepareCerts issues missing agent and deployer certificates, regenerates the NATS config, reloads once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-sec-'));
  try {
    const certs = join(dir, 'certs');
    const inv = inventory(dir);
    // No CA yet: a clear refusal, nothing issued.
    await assert.rejects(
      prepareCerts(inv, inv.hosts, () => {}),
      (err: unknown) => {
        return (
          err instanceof DeployError &&
          err.failure === 'certs' &&
          /drover certs init/.test(err.message)
        );
      },
    );
    await initCluster(certs, { serverAddresses: ['10.0.0.5'] });
    const lines: string[] = [];
    const first = await prepareCerts(inv, inv.hosts, (h, m) => lines.push(`${h}: ${m}`));
    assert.deepEqual(first.issued, [
      'agent h1 (missing)',
      'agent h2 (missing)',
      'operator deployer (missing)',
    ]);
    assert.equal(first.changed, true);
    assert.equal(first.reloaded, true);
    assert.equal(reloads(dir), 1);
    const conf = readFileSync(first.natsConfig, 'utf8');
    for (const user of [
      'CN=h1,OU=agent,O=drover',
      'CN=h2,OU=agent,O=drover',
      'CN=deployer,OU=operator,O=drover',
    ])
      assert.ok(conf.includes(`user: "${user}"`), user);
    assert.equal(statSync(first.natsConfig).mode & 0o777, 0o600);
    // Each agent's certificate is its identity and names its address (peers' streams check it).
    const h1 = agentCertFiles(certs, 'h1');
    assert.deepEqual(await identityOfCertificate(h1.certFile), { role: 'agent', name: 'h1' });
    const c1 = new X509Certificate(readFileSync(h1.certFile));
    assert.equal(c1.checkIP('10.0.0.11'), '10.0.0.11');
    const c2 = new X509Certificate(readFileSync(agentCertFiles(certs, 'h2').certFile));
    assert.equal(c2.checkHost('h2.example'), 'h2.example');
    assert.equal(statSync(h1.keyFile).mode & 0o777, 0o600);
    assert.ok(lines.some((l) => /^local: issuing the agent certificate of h1 \(missing\)/.test(l)));

    // A second run: nothing issued, the config unchanged, no reload.
    const second = await prepareCerts(inv, inv.hosts, () => {});
    assert.deepEqual(second.issued, []);
    assert.equal(second.changed, false);
    assert.equal(second.reloaded, false);
    assert.equal(reloads(dir), 1);

    // h1 moved: its certificate no longer names its address; re-issued when h1 is chosen only.
    const moved = inventory(dir, {}, '10.0.0.21');
    const notChosen = await prepareCerts(moved, moved.hosts.slice(1), () => {});
    assert.deepEqual(notChosen.issued, []);
    const chosen = await prepareCerts(moved, moved.hosts.slice(0, 1), () => {});
    assert.deepEqual(chosen.issued, ['agent h1 (does not name 10.0.0.21)']);
    assert.equal(chosen.changed, false, 'same identities, same NATS config');
    assert.equal(reloads(dir), 1);

    // The host gets the CA, its own certificate and key (0600) for NATS and streams alike.
    const host = moved.hosts[0]!;
    const files = hostFiles(moved, host, 'supervisor', '/usr/bin/node');
    const byPath = new Map(files.map((f) => [f.target, f]));
    const cfg = JSON.parse(String(byPath.get('/opt/drover/etc/agent.json')?.content)) as {
      nats: { tls: unknown };
      streamTls: unknown;
    };
    const tls = {
      caFile: '/opt/drover/etc/tls/agent-ca.pem',
      certFile: '/opt/drover/etc/tls/agent-cert.pem',
      keyFile: '/opt/drover/etc/tls/agent-key.pem',
    };
    assert.deepEqual(cfg.nats.tls, tls);
    // Streams also check peers against the CA's revocation list, pushed with the certificates.
    assert.deepEqual(cfg.streamTls, { ...tls, crlFile: '/opt/drover/etc/tls/crl.pem' });
    const crl = byPath.get('/opt/drover/etc/tls/crl.pem');
    assert.equal(crl?.mode, 0o600);
    assert.deepEqual(crl?.content, readFileSync(join(certs, 'crl.pem')));
    for (const [k, local] of [
      ['caFile', h1.caFile],
      ['certFile', h1.certFile],
      ['keyFile', h1.keyFile],
    ] as const) {
      const f = byPath.get(tls[k]);
      assert.equal(f?.mode, 0o600);
      assert.deepEqual(f?.content, readFileSync(local));
    }

    // A failing reload command stops before any host is touched, with its stderr.
    rmSync(agentCertFiles(certs, 'h2').certFile);
    rmSync(join(certs, 'agent', 'h2.key'));
    rmSync(join(certs, 'agent', 'h1.crt'));
    const failing = compileInventory(
      {
        certs: 'certs',
        nats: { servers: ['nats://10.0.0.5:4222'], reload: 'echo no such server >&2; exit 3' },
        hosts: [{ name: 'h1', address: '10.0.0.21', hostKey: FP }],
      },
      join(dir, 'inv.yaml'),
    );
    await assert.rejects(
      prepareCerts(failing, failing.hosts, () => {}),
      (err: unknown) => {
        return (
          err instanceof DeployError &&
          err.step === 'nats-reload' &&
          err.exitCode === 3 &&
          err.stderrTail === 'no such server'
        );
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
