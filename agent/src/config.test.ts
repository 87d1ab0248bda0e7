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
    { checkpointOptions: ['shell-job'] },
    { checkpointOptions: ['ghost-limit=lots'] },
  ];
  for (const layer of bad) {
    assert.throws(
      () => compileAgentConfig({ hostId: 'h1' }, layer),
      (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'),
    );
  }
  assert.throws(() => configFromArgs(['--bogus']));
});

test("a host's checkpoint options come from the file, DROVER_CHECKPOINT_OPTS and --checkpoint-opt", () => {
  const { input } = configFromArgs([
    '--checkpoint-opt',
    'no-file-locks',
    '--checkpoint-opt',
    'ghost-limit=8M',
  ]);
  const c = compileAgentConfig(
    { hostId: 'h1', checkpointOptions: ['tcp-close', 'file-locks'] },
    configFromEnv({ DROVER_CHECKPOINT_OPTS: 'weak-sysctls' }),
    input,
  );
  // Each layer replaces the list of the one below it (as every other setting does).
  assert.deepEqual(c.checkpointOptions, { fileLocks: false, ghostLimitBytes: 8 * 1024 * 1024 });
  assert.deepEqual(
    compileAgentConfig(
      { hostId: 'h1' },
      configFromEnv({ DROVER_CHECKPOINT_OPTS: 'weak-sysctls,tcp-close' }),
    ).checkpointOptions,
    { weakSysctls: true, tcpClose: true },
  );
  assert.deepEqual(compileAgentConfig({ hostId: 'h1' }).checkpointOptions, {});
});
