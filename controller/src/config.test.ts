import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import {
  compileControllerConfig,
  controllerConfigFromEnv,
  controllerConfigFromFile,
} from './config.js';

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

test('controller config: the job network', () => {
  assert.equal(compileControllerConfig({}).jobNetwork, null);
  const n = compileControllerConfig(
    controllerConfigFromEnv({ DROVER_JOB_SUBNET: '10.78.0.0/16', DROVER_JOB_GATEWAY: '10.78.0.1' }),
  ).jobNetwork;
  assert.deepEqual(n, {
    subnet: '10.78.0.0/16',
    prefixLength: 16,
    gateway: '10.78.0.1',
    first: '10.78.0.1',
    last: '10.78.255.254',
  });
  const ranged = compileControllerConfig({
    jobNetwork: { subnet: '10.78.5.0/24', range: '10.78.5.100-10.78.5.199' },
  }).jobNetwork;
  assert.equal(ranged?.first, '10.78.5.100');
  assert.equal(ranged?.gateway, null);
  for (const bad of [
    { subnet: '10.78.5.1/24' },
    { subnet: '10.78.5.0/33' },
    { subnet: '10.78.5.0/24', gateway: '10.78.6.1' },
    { subnet: '10.78.5.0/24', range: '10.78.5.9-10.78.5.2' },
    { subnet: '10.78.5.0/24', range: '10.78.5.0-10.78.5.2' },
    { gateway: '10.78.5.1' },
  ]) {
    assert.throws(
      () => compileControllerConfig({ jobNetwork: bad }),
      (e) => isDroverError(e, 'INVALID_ARGUMENT'),
      JSON.stringify(bad),
    );
  }
});

test('controller config: a file that does not fit is refused, naming the file and the field', async () => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'drover-controller-config-'));
  try {
    const file = join(dir, 'controller.json');
    const refused = (content: string, field: string, problem: RegExp): void => {
      writeFileSync(file, content);
      assert.throws(
        () => controllerConfigFromFile(file),
        (e) =>
          isDroverError(e, 'INVALID_ARGUMENT') &&
          e.details['path'] === field &&
          e.message.startsWith(`controller config ${file}: ${field}`) &&
          problem.test(e.message),
        content,
      );
    };
    refused('{"replicas": "three"}', 'replicas', /whole number/);
    refused('{"jobNetwork": {"subnet": 10}}', 'jobNetwork.subnet', /expected text/);
    refused('{"nats": {"token": "t"}}', 'nats.token', /unknown field/);
    refused('{"logLevel": "verbose"}', 'logLevel', /must be one of/);
    refused('{"leaseTtl": 5000}', 'leaseTtl', /unknown field/);
    writeFileSync(
      file,
      JSON.stringify({ id: 'c1', replicas: 3, nats: { servers: ['nats://a:1'] } }),
    );
    const c = compileControllerConfig(controllerConfigFromFile(file));
    assert.equal(c.id, 'c1');
    assert.equal(c.replicas, 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
