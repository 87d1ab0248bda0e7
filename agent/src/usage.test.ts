import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { configFromArgs } from './config.js';

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

test('configFromArgs: --help wins over every other flag', () => {
  assert.equal(configFromArgs(['--host-id', 'h1', '--help']).help, true);
  assert.equal(configFromArgs(['-h']).help, true);
  assert.equal(configFromArgs(['--host-id', 'h1']).help, undefined);
});

test('drover-agent --help prints the usage and exits 0 without starting', () => {
  const r = spawnSync(process.execPath, [MAIN, '--help'], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Usage: drover-agent/);
  for (const o of ['--config', '--host-id', '--nats-cert', '--stream-listen', '--job-bridge'])
    assert.ok(r.stdout.includes(o), `usage names ${o}`);
  assert.equal(r.stderr, '');
});
