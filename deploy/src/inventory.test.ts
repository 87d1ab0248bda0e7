import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDroverError } from '@drover/common';
import { compileInventory, loadInventory, parseHostKey, selectHosts } from './inventory.js';

const KEY1 =
  'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnmeaOVE02H4tGskrQ7tJfSvTO+hyYoJf8yGsFqBwa7 test';
const KEY1_FP = 'SHA256:+zf2jx6PCwGVEftf5dQ1VPvnNYtmokrYZ1WKuib4P6s'; // ssh-keygen -lf
const FP2 = 'SHA256:SGYGLXhyo96W1vUlWY9xI5KnOtEUTsjMUeKAv/8lFhc';

function problems(doc: unknown): string[] {
  try {
    compileInventory(doc, '/etc/drover/inv.yaml');
  } catch (err) {
    assert.ok(isDroverError(err, 'INVALID_ARGUMENT'), String(err));
    return (err.details.problems as string[]) ?? [String(err.message)];
  }
  assert.fail('the inventory was accepted');
}

test('host keys: an OpenSSH line gives the same fingerprint as ssh-keygen; a fingerprint is taken as is', () => {
  assert.deepEqual(parseHostKey(KEY1), { fingerprint: KEY1_FP, type: 'ssh-ed25519' });
  assert.deepEqual(parseHostKey(`  ${FP2} `), { fingerprint: FP2, type: null });
  assert.equal(parseHostKey('ssh-ed25519 bm90IGEga2V5'), null, 'blob does not name its type');
  assert.equal(parseHostKey(KEY1.replace('ssh-ed25519', 'ssh-rsa')), null, 'type mismatch');
  assert.equal(parseHostKey('SHA256:short'), null);
  assert.equal(parseHostKey('MD5:aa:bb'), null);
});

test('defaults apply, hosts override them key by key, relative paths follow the inventory', () => {
  const inv = compileInventory(
    {
      nats: { servers: 'nats://10.0.0.5:4222,nats://10.0.0.6:4222', tls: { caFile: 'ca.pem' } },
      controller: { heartbeatTimeoutSec: 30 },
      defaults: {
        key: 'keys/id',
        installRoot: '/srv/drover-install',
        stateDir: '/srv/drover',
        labels: { dc: 'x' },
        agent: { heartbeatMs: 500, logLevel: 'debug' },
      },
      hosts: [
        { name: 'h1', address: '10.0.0.11', hostKey: KEY1 },
        {
          name: 'h2',
          address: '10.0.0.12',
          port: 2222,
          user: 'ops',
          hostKey: FP2,
          labels: { rack: 'b' },
          agent: { streamPort: 7171 },
          service: 'supervisor',
        },
      ],
    },
    '/etc/drover/inv.yaml',
  );
  assert.deepEqual(inv.nats.servers, ['nats://10.0.0.5:4222', 'nats://10.0.0.6:4222']);
  assert.deepEqual(inv.controller.servers, inv.nats.servers, 'controller defaults to nats');
  assert.equal(inv.controller.heartbeatTimeoutMs, 30_000);
  assert.equal(inv.nats.tls?.caFile, '/etc/drover/ca.pem');
  const [h1, h2] = inv.hosts;
  assert.ok(h1 && h2);
  assert.equal(h1.port, 22);
  assert.equal(h1.user, 'root');
  assert.equal(h1.key, '/etc/drover/keys/id');
  assert.equal(h1.hostKey.fingerprint, KEY1_FP);
  assert.equal(h1.installRoot, '/srv/drover-install');
  assert.equal(h1.agent.streamListen, '10.0.0.11:7070');
  assert.equal(h1.agent.heartbeatMs, 500);
  assert.equal(h1.service, 'auto');
  assert.equal(h1.setup, 'full');
  assert.equal(h2.port, 2222);
  assert.equal(h2.user, 'ops');
  assert.deepEqual(h2.labels, { dc: 'x', rack: 'b' });
  assert.equal(h2.agent.streamListen, '10.0.0.12:7171');
  assert.equal(h2.agent.logLevel, 'debug', 'agent settings merge key by key');
  assert.equal(h2.service, 'supervisor');
  assert.deepEqual(
    selectHosts(inv, [], ['rack=b']).map((h) => h.name),
    ['h2'],
  );
  assert.deepEqual(
    selectHosts(inv, ['h2', 'h1']).map((h) => h.name),
    ['h1', 'h2'],
    'inventory order',
  );
  assert.throws(() => selectHosts(inv, ['h9']), /no host h9/);
});

test('every problem is reported at once, with where it is', () => {
  const list = problems({
    nats: { servers: [], user: 'u' },
    defaults: { installRoot: '/', bogus: 1 },
    hosts: [
      { name: 'h1', address: '10.0.0.1' },
      { name: 'h1', address: '10.0.0.2', hostKey: 'ssh-ed25519 garbage', adress: 'x' },
      { name: 'bad name', address: '10.0.0.3', hostKey: FP2, stateDir: '/var/lib/other' },
      { address: '10.0.0.4', hostKey: FP2, port: 70000, setup: 'sometimes' },
    ],
    extra: true,
  });
  const text = list.join('\n');
  for (const re of [
    /inventory\.extra: unknown key/,
    /nats\.servers: expected a list/,
    /nats: user and password go together/,
    /defaults\.bogus: unknown key/,
    /hosts\[0\] \(h1\): hostKey is required: pin the host key/,
    /hosts\[1\] \(h1\)\.hostKey: expected an OpenSSH public key line/,
    /hosts\[1\] \(h1\)\.adress: unknown key/,
    /hosts\[2\] \(bad name\)\.name: unsafe host id/,
    /hosts\[3\]: name is required/,
    /hosts\[3\]\.port: expected an integer 1\.\.65535/,
    /hosts\[3\]\.setup: expected one of full, skip-packages, none/,
    /installRoot: must be an absolute path of at least two plain components, got \//,
  ]) {
    assert.match(text, re);
  }
});

test('duplicate names, different state dirs and nested paths are refused', () => {
  const base = { nats: { servers: ['nats://n:4222'] } };
  assert.match(
    problems({
      ...base,
      hosts: [
        { name: 'a', address: '10.0.0.1', hostKey: FP2 },
        { name: 'a', address: '10.0.0.2', hostKey: FP2 },
      ],
    }).join('\n'),
    /duplicate name a/,
  );
  assert.match(
    problems({
      ...base,
      hosts: [
        { name: 'a', address: '10.0.0.1', hostKey: FP2 },
        { name: 'b', address: '10.0.0.2', hostKey: FP2, stateDir: '/srv/other' },
      ],
    }).join('\n'),
    /every host needs the same stateDir/,
  );
  assert.match(
    problems({
      ...base,
      hosts: [{ name: 'a', address: '10.0.0.1', hostKey: FP2, installRoot: '/var/lib/drover/x' }],
    }).join('\n'),
    /must not contain each other/,
  );
});

test('loadInventory: YAML with secrets from files; syntax errors name the line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-inv-'));
  try {
    writeFileSync(join(dir, 'token'), 's3cret\n', { mode: 0o600 });
    writeFileSync(
      join(dir, 'inv.yaml'),
      [
        '# a comment',
        'nats:',
        '  servers: [nats://10.0.0.5:4222]',
        '  tokenFile: token',
        'hosts:',
        `  - { name: h1, address: 10.0.0.11, hostKey: "${KEY1}" }`,
        '',
      ].join('\n'),
    );
    const inv = loadInventory(join(dir, 'inv.yaml'));
    assert.equal(inv.nats.token, 's3cret');
    assert.equal(inv.hosts[0]?.name, 'h1');
    writeFileSync(join(dir, 'bad.yaml'), 'nats:\n  servers: [a\nhosts: x\n');
    assert.throws(() => loadInventory(join(dir, 'bad.yaml')), /bad\.yaml line \d+, column \d+/);
    assert.throws(() => loadInventory(join(dir, 'missing.yaml')), /cannot read inventory/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
