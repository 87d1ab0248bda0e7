import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { deployArgs, deployBin } from './deploy.js';

test('drover deploy passes everything after `deploy` through, and --json given before it', () => {
  const raw = ['--nats', 'nats://x:4222', 'deploy', '-i', 'inv.yaml', 'status', 'h1', '--help'];
  assert.deepEqual(deployArgs(raw, false), ['-i', 'inv.yaml', 'status', 'h1', '--help']);
  assert.deepEqual(deployArgs(raw, true), ['--json', '-i', 'inv.yaml', 'status', 'h1', '--help']);
  assert.deepEqual(deployArgs(['deploy', 'status', '--json'], true), ['status', '--json']);
});

test('the deployer bin: DROVER_DEPLOY_BIN, else the one built next to this CLI', () => {
  assert.deepEqual(deployBin({ DROVER_DEPLOY_BIN: '/opt/x/drover-deploy' }), [
    '/opt/x/drover-deploy',
  ]);
  const [node, main] = deployBin({});
  assert.equal(node, process.execPath);
  assert.match(main ?? '', /\/deploy\/dist\/main\.js$/);
  assert.ok(existsSync(main ?? ''), `${main} is not built`);
});
