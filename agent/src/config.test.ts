import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import { compileAgentConfig, configFromArgs, configFromEnv } from './config.js';

test('layers: defaults < file < env < flags', () => {
  const file = { hostId: 'from-file', stateDir: '/file', nats: { servers: ['nats://f:4222'] } };
  const env = configFromEnv({
    DROVER_STATE_DIR: '/env',
    DROVER_NATS_SERVERS: 'nats://e:1,nats://e:2',
  });
  const flags = configFromArgs([
    '--host-id',
    'h7',
    '--nats-ca',
    '/ca.pem',
    '--heartbeat-ms',
    '750',
  ]).input;
  const c = compileAgentConfig(file, env, flags);
  assert.equal(c.hostId, 'h7');
  assert.equal(c.stateDir, '/env');
  assert.deepEqual(c.nats.servers, ['nats://e:1', 'nats://e:2']);
  assert.deepEqual(c.nats.tls, { caFile: '/ca.pem' });
  assert.equal(c.heartbeatIntervalMs, 750);
  assert.equal(c.cgroupParent, 'drover');
  assert.ok(Object.isFrozen(c));
});

test('bad values are refused with INVALID_ARGUMENT', () => {
  const bad = [
    { hostId: 'a/b' },
    { stateDir: 'relative' },
    { heartbeatIntervalMs: 5 },
    { streamListen: 'nope' },
    { logLevel: 'loud' as never },
    { nats: { servers: [] } },
  ];
  for (const layer of bad) {
    assert.throws(
      () => compileAgentConfig({ hostId: 'h1' }, layer),
      (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'),
    );
  }
  assert.throws(() => configFromArgs(['--bogus']));
});
