import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostFiles, systemdUnit } from './host-files.js';
import { compileInventory } from './inventory.js';
import { UNIT_PATH } from './remote.js';

const FP = 'SHA256:SGYGLXhyo96W1vUlWY9xI5KnOtEUTsjMUeKAv/8lFhc';

test('the agent config carries the inventory; secrets and keys land 0600; the unit keeps jobs alive', () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-files-'));
  try {
    for (const f of ['ca.pem', 'cert.pem', 'key.pem', 'h1.pem', 'h1-key.pem'])
      writeFileSync(join(dir, f), `-----${f}-----\n`);
    const inv = compileInventory(
      {
        nats: {
          servers: ['tls://10.0.0.5:4222'],
          tls: { caFile: 'ca.pem', certFile: 'cert.pem', keyFile: 'key.pem' },
          user: 'agent',
          password: 'pw',
        },
        defaults: { installRoot: '/opt/drover', agent: { reserveMemoryMiB: 512 } },
        hosts: [
          {
            name: 'h1',
            address: '10.0.0.11',
            hostKey: FP,
            agent: {
              streamTls: { caFile: 'ca.pem', certFile: 'h1.pem', keyFile: 'h1-key.pem' },
              metricsAddr: '10.0.0.11:9464',
            },
          },
        ],
      },
      join(dir, 'inv.yaml'),
    );
    const host = inv.hosts[0];
    assert.ok(host);
    const files = hostFiles(inv, host, 'systemd', '/usr/bin/node');
    const byPath = new Map(files.map((f) => [f.target, f]));
    const cfg = byPath.get('/opt/drover/etc/agent.json');
    assert.ok(cfg);
    assert.equal(cfg.mode, 0o600);
    assert.deepEqual(JSON.parse(String(cfg.content)), {
      hostId: 'h1',
      stateDir: '/var/lib/drover',
      nats: {
        servers: ['tls://10.0.0.5:4222'],
        tls: {
          caFile: '/opt/drover/etc/tls/nats-ca.pem',
          certFile: '/opt/drover/etc/tls/nats-cert.pem',
          keyFile: '/opt/drover/etc/tls/nats-key.pem',
        },
        user: 'agent',
        pass: 'pw',
      },
      heartbeatIntervalMs: 2000,
      streamListen: '10.0.0.11:7070',
      logLevel: 'info',
      reserveMemoryBytes: 512 * 1024 * 1024,
      metricsAddr: '10.0.0.11:9464',
      streamTls: {
        caFile: '/opt/drover/etc/tls/stream-ca.pem',
        certFile: '/opt/drover/etc/tls/stream-cert.pem',
        keyFile: '/opt/drover/etc/tls/stream-key.pem',
      },
    });
    for (const f of files.filter((x) => x.target.includes('/etc/tls/'))) {
      assert.equal(f.mode, 0o600, f.target);
    }
    assert.equal(
      String(byPath.get('/opt/drover/etc/tls/stream-key.pem')?.content),
      '-----h1-key.pem-----\n',
    );
    assert.equal(
      JSON.parse(String(byPath.get('/opt/drover/etc/service.json')?.content)).mode,
      'systemd',
    );
    const unit = String(byPath.get(UNIT_PATH)?.content);
    assert.match(unit, /^KillMode=process$/m);
    assert.match(unit, /^Restart=always$/m);
    assert.match(
      unit,
      /readlink -f \/opt\/drover\/current\)"\/agent\/dist\/main\.js --config \/opt\/drover\/etc\/agent\.json/,
    );
    assert.equal(unit, systemdUnit(host, '/usr/bin/node'));
    assert.equal(
      hostFiles(inv, host, 'supervisor', '/usr/bin/node').some((f) => f.target === UNIT_PATH),
      false,
      'no unit without systemd',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a metrics address that is no ADDRESS:PORT is a problem of the inventory', () => {
  assert.throws(
    () =>
      compileInventory(
        {
          nats: { servers: ['nats://10.0.0.5:4222'] },
          hosts: [
            { name: 'h1', address: '10.0.0.11', hostKey: FP, agent: { metricsAddr: '9464' } },
          ],
        },
        '/nonexistent/inv.yaml',
      ),
    /hosts\[0\] \(h1\)\.agent\.metricsAddr: expected ADDRESS:PORT, got 9464/,
  );
});
