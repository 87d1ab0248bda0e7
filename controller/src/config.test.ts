import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import { compileControllerConfig, controllerConfigFromEnv } from './config.js';

test('controller config: layers and validation', () => {
  const c = compileControllerConfig(
    { id: 'a', replicas: 3 },
    controllerConfigFromEnv({ DROVER_NATS_SERVERS: 'nats://x:1,nats://y:2' }),
    {
      leaseTtlMs: 3000,
    },
  );
  assert.equal(c.id, 'a');
  assert.deepEqual(c.nats.servers, ['nats://x:1', 'nats://y:2']);
  assert.equal(c.replicas, 3);
  assert.equal(c.leaseTtlMs, 3000);
  assert.equal(c.auditRetentionDays, 365);
  assert.equal(
    compileControllerConfig(controllerConfigFromEnv({ DROVER_AUDIT_RETENTION_DAYS: '30' }))
      .auditRetentionDays,
    30,
  );
  for (const bad of [
    { auditRetentionDays: 0 },
    { auditRetentionDays: 1.5 },
    { imageRetention: 0 },
    { replicas: 2 },
    { leaseTtlMs: 10 },
    { unreachableAfterMs: 1 },
    { nats: { servers: [] } },
  ]) {
    assert.throws(
      () => compileControllerConfig(bad),
      (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'),
    );
  }
});
