import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { isDroverError } from '@drover/common';
import { controllerFiles, natsFiles } from './control-files.js';
import { contextOf } from './deploy-context.js';
import { DeployError, DeployFailure } from './errors.js';
import { failedResult } from './fleet.js';
import { compileInventory, type Inventory } from './inventory.js';
import { members } from './commands/control-plane.js';

const KEY = 'SHA256:SGYGLXhyo96W1vUlWY9xI5KnOtEUTsjMUeKAv/8lFhc';
const hosts = [1, 2, 3].map((i) => ({ name: `h${i}`, address: `10.0.0.1${i}`, hostKey: KEY }));

function problems(doc: Record<string, unknown>): string[] {
  try {
    compileInventory({ hosts, ...doc }, '/ops/fleet.yaml');
  } catch (err) {
    assert.ok(isDroverError(err, 'INVALID_ARGUMENT'), String(err));
    return err.details.problems as string[];
  }
  assert.fail('the inventory was accepted');
}

const fleet = (): Inventory =>
  compileInventory(
    {
      certs: './certs',
      nats: { hosts: ['h1', 'h2', 'h3'] },
      controller: { hosts: ['h1', 'h2'], jobNetwork: { subnet: '10.78.0.0/24' } },
      hosts,
    },
    '/ops/fleet.yaml',
  );

test('nats.hosts: clients dial each server at its host address; the context is the file name', () => {
  const inv = fleet();
  assert.deepEqual(inv.nats.deploy, {
    hosts: ['h1', 'h2', 'h3'],
    port: 4222,
    routePort: 6222,
    cluster: 'drover',
  });
  const urls = ['nats://10.0.0.11:4222', 'nats://10.0.0.12:4222', 'nats://10.0.0.13:4222'];
  assert.deepEqual(inv.nats.servers, urls);
  assert.deepEqual(inv.controller.servers, urls);
  assert.deepEqual(inv.controller.hosts, ['h1', 'h2']);
  assert.equal(inv.context, 'fleet');
  assert.deepEqual(
    members(inv, inv.hosts).map((m) => `${m.host.name}/${m.service}`),
    ['h1/nats', 'h2/nats', 'h3/nats', 'h1/controller', 'h2/controller'],
  );
  const ctx = contextOf(inv);
  assert.deepEqual(ctx.nats, urls);
  assert.equal(ctx.caFile, '/ops/certs/ca.crt');
  assert.equal(ctx.certFile, '/ops/certs/operator/deployer.crt');
});

test('the control plane schema is validated with every problem at once', () => {
  assert.deepEqual(
    problems({
      certs: './certs',
      nats: { hosts: ['h1', 'h2'], user: 'u', password: 'p', cluster: 'a b' },
      controller: { hosts: ['h9'], jobNetwork: { gateway: '10.0.0.1' } },
    }),
    [
      'nats.hosts: 1 or 3 hosts (a JetStream cluster needs 3), got 2',
      'nats.user: not with nats.hosts: the deployed NATS admits certificates only',
      'nats.password: not with nats.hosts: the deployed NATS admits certificates only',
      'nats.cluster: letters, digits, _ and - only, got a b',
      'controller.jobNetwork: subnet is required',
      'controller.hosts: h9 is not an inventory host',
    ],
  );
  assert.deepEqual(problems({ nats: { hosts: ['h1'] } }), [
    'nats.hosts: needs `certs`: the deployer issues the certificates of what it runs',
  ]);
  assert.deepEqual(problems({ certs: './c', nats: { servers: ['x'], port: 1 } }), [
    'nats.port: only with nats.hosts',
  ]);
  assert.deepEqual(problems({ certs: './c', nats: {} }), [
    'nats.servers: required (or nats.hosts: NATS run by the deployer)',
  ]);
});

test('a NATS server config: its own address, JetStream in the state dir, TLS, routes to the others', () => {
  const inv = fleet();
  const h2 = inv.hosts[1]!;
  // Reading the certificate files fails here (none exist): the error names the file.
  assert.throws(
    () => natsFiles(inv, h2, 'supervisor', '/usr/bin/node', []),
    /cannot read nats caFile \/ops\/certs\/ca\.crt/,
  );
  assert.throws(
    () => controllerFiles(inv, h2, 'systemd', '/usr/bin/node'),
    /cannot read controller caFile \/ops\/certs\/ca\.crt/,
  );
});

test('with the certificates at hand: configs name only host paths, units on systemd hosts', () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-cp-'));
  try {
    for (const f of [
      'ca.crt',
      'server/h2.crt',
      'server/h2.key',
      'controller/h2.crt',
      'controller/h2.key',
    ]) {
      mkdirSync(dirname(join(dir, f)), { recursive: true });
      writeFileSync(join(dir, f), `pem of ${f}\n`);
    }
    const inv = compileInventory(
      {
        certs: dir,
        nats: { hosts: ['h1', 'h2', 'h3'] },
        controller: { hosts: ['h2'], logLevel: 'debug' },
        defaults: { installRoot: '/opt/drover', stateDir: '/var/lib/drover' },
        hosts,
      },
      '/ops/fleet.yaml',
    );
    const h2 = inv.hosts[1]!;
    const ids = [
      { role: 'controller' as const, name: 'h2' },
      { role: 'agent' as const, name: 'h1' },
    ];
    const nats = natsFiles(inv, h2, 'systemd', '/usr/bin/node', ids);
    const conf = String(nats[0]!.content);
    assert.equal(nats[0]!.target, '/opt/drover/etc/nats/nats.conf');
    assert.match(conf, /^server_name: "h2"$/m);
    assert.match(conf, /^listen: "10\.0\.0\.12:4222"$/m);
    assert.match(conf, /store_dir: "\/var\/lib\/drover\/nats"/);
    assert.match(conf, /user: "CN=h1,OU=agent,O=drover"/);
    assert.match(conf, /listen: "10\.0\.0\.12:6222"/);
    assert.match(conf, /"nats-route:\/\/10\.0\.0\.11:6222"/);
    assert.match(conf, /"nats-route:\/\/10\.0\.0\.13:6222"/);
    assert.ok(!conf.includes(dir), 'no path of the operator machine');
    assert.match(conf, /cert_file: "\/opt\/drover\/etc\/tls\/nats-cert\.pem"/);
    const unit = nats.find((f) => f.target === '/etc/systemd/system/drover-nats.service');
    assert.match(
      String(unit?.content),
      /ExecStart=\/bin\/sh -c 'exec \/usr\/local\/sbin\/nats-server -c \/opt\/drover\/etc\/nats\/nats\.conf'/,
    );
    const spec = JSON.parse(
      String(nats.find((f) => f.target.endsWith('nats-service.json'))?.content),
    );
    assert.deepEqual(spec.exec, [
      '/usr/local/sbin/nats-server',
      '-c',
      '/opt/drover/etc/nats/nats.conf',
    ]);

    const ctl = controllerFiles(inv, h2, 'supervisor', '/usr/bin/node');
    const cfg = JSON.parse(String(ctl[0]!.content));
    assert.deepEqual(cfg, {
      id: 'h2',
      nats: {
        servers: ['nats://10.0.0.11:4222', 'nats://10.0.0.12:4222', 'nats://10.0.0.13:4222'],
        tls: {
          caFile: '/opt/drover/etc/tls/controller-ca.pem',
          certFile: '/opt/drover/etc/tls/controller-cert.pem',
          keyFile: '/opt/drover/etc/tls/controller-key.pem',
        },
      },
      replicas: 3,
      logLevel: 'debug',
    });
    assert.ok(!ctl.some((f) => f.target.startsWith('/etc/systemd')), 'no unit without systemd');
    const cspec = JSON.parse(
      String(ctl.find((f) => f.target.endsWith('controller-service.json'))?.content),
    );
    assert.deepEqual(cspec.exec, [
      '/usr/bin/node',
      '@RELEASE@/controller/dist/main.js',
      '--config',
      '/opt/drover/etc/controller.json',
    ]);
    for (const f of [...nats, ...ctl].filter((x) => x.target.includes('/tls/')))
      assert.equal(f.mode, 0o600, f.target);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a step that failed after changing the host reports changed (issue #20: "changed: -")', () => {
  const err = new DeployError(
    { host: 'h1', failure: DeployFailure.cluster, step: 'heartbeat' },
    'nobody serves drover.ctl.hosts.operator.deployer',
    { details: { changed: true, agentLog: 'x' } },
  );
  const r = failedResult('h1', err);
  assert.equal(r.ok, false);
  assert.equal(r.changed, true);
  assert.deepEqual(r.data, { agentLog: 'x' }, '`changed` is the column, not data');
  const before = failedResult(
    'h1',
    new DeployError({ host: 'h1', failure: DeployFailure.command, step: 'layout' }, 'no'),
  );
  assert.equal(before.changed, false);
});
