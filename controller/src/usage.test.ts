import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

for (const flag of ['--help', '-h']) {
  test(`drover-controller ${flag} prints the usage and exits 0 without connecting`, () => {
    const r = spawnSync(process.execPath, [MAIN, flag, '--nats', 'nats://192.0.2.1:1'], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^Usage: drover-controller/);
    for (const o of ['--config', '--nats-cert', '--lease-ms', '--replicas', '--job-range'])
      assert.ok(r.stdout.includes(o), `usage names ${o}`);
    assert.equal(r.stderr, '');
  });
}
