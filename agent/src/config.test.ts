import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import { compileAgentConfig, configFromArgs, configFromEnv, configFromFile } from './config.js';

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
    '--restore-timeout-ms',
    '5000',
  ]).input;
  const c = compileAgentConfig(file, env, flags);
  assert.equal(c.hostId, 'h7');
  assert.equal(c.stateDir, '/env');
  assert.deepEqual(c.nats.servers, ['nats://e:1', 'nats://e:2']);
  assert.deepEqual(c.nats.tls, { caFile: '/ca.pem' });
  assert.equal(c.heartbeatIntervalMs, 750);
  assert.equal(c.restoreTimeoutMs, 5000);
  assert.equal(compileAgentConfig({ hostId: 'h1' }).restoreTimeoutMs, 60_000);
  assert.equal(c.cgroupParent, 'drover');
  assert.ok(Object.isFrozen(c));
});

test("the cut timer's priority: 10 by default, 0 (off) from DROVER_CUT_PRIORITY, a flag over both", () => {
  assert.equal(compileAgentConfig({ hostId: 'h1' }).cutPriority, 10);
  const env = configFromEnv({ DROVER_CUT_PRIORITY: '0' });
  assert.equal(compileAgentConfig({ hostId: 'h1' }, env).cutPriority, 0);
  const { input } = configFromArgs(['--cut-priority', '20']);
  assert.equal(compileAgentConfig({ hostId: 'h1' }, env, input).cutPriority, 20);
});

test('bad values are refused with INVALID_ARGUMENT', () => {
  const bad = [
    { hostId: 'a/b' },
    { stateDir: 'relative' },
    { heartbeatIntervalMs: 5 },
    { restoreTimeoutMs: 10 },
    { streamListen: 'nope' },
    { logLevel: 'loud' as never },
    { nats: { servers: [] } },
    { checkpointOptions: ['shell-job'] },
    { checkpointOptions: ['ghost-limit=lots'] },
    { cutPriority: 100 },
    { cutPriority: -1 },
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

test('a config file that does not fit is refused, naming the file and the field', async () => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'drover-agent-config-'));
  try {
    const file = join(dir, 'agent.json');
    const refused = (content: string, field: string, problem: RegExp): void => {
      writeFileSync(file, content);
      assert.throws(
        () => configFromFile(file),
        (e) =>
          isDroverError(e, 'INVALID_ARGUMENT') &&
          e.details['path'] === field &&
          e.message.startsWith(`agent config ${file}: ${field}`) &&
          problem.test(e.message),
        content,
      );
    };
    refused('{"heartbeatIntervalMs": "fast"}', 'heartbeatIntervalMs', /whole number/);
    refused('{"nats": {"servers": [4222]}}', 'nats.servers[0]', /expected text/);
    refused('{"nats": {"tls": {"ca": "/ca.pem"}}}', 'nats.tls.ca', /unknown field/);
    refused('{"logLevel": "loud"}', 'logLevel', /must be one of debug, info, warn, error/);
    refused('{"stateDir": "/s", "maxjobs": 3}', 'maxjobs', /unknown field/);
    refused('{"streamTls": {"caFile": "/ca.pem"}}', 'streamTls.certFile', /is required/);
    writeFileSync(file, '{"hostId": ');
    assert.throws(
      () => configFromFile(file),
      (e) => isDroverError(e, 'INVALID_ARGUMENT') && e.message.startsWith(`agent config ${file}: `),
    );
    assert.throws(
      () => configFromFile(join(dir, 'missing.json')),
      (e) => isDroverError(e, 'INVALID_ARGUMENT') && /cannot read agent config/.test(e.message),
    );
    // A good file is the layer it says, and compiles.
    writeFileSync(
      file,
      JSON.stringify({ hostId: 'h1', nats: { servers: 'nats://a:1,nats://b:2' }, maxJobs: 5 }),
    );
    const layer = configFromFile(file);
    assert.deepEqual(layer, {
      hostId: 'h1',
      nats: { servers: 'nats://a:1,nats://b:2' },
      maxJobs: 5,
    });
    assert.deepEqual(compileAgentConfig(layer).nats.servers, ['nats://a:1', 'nats://b:2']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
