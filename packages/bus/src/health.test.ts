/** jetStreamAnswers against a real nats-server: true with JetStream, UNAVAILABLE otherwise. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { isDroverError } from '@drover/common';
import { jetStreamAnswers } from './health.js';
import { freePort, startTestNats } from './test-nats.js';

test('a server with JetStream answers', async () => {
  const nats = await startTestNats('health-test');
  try {
    assert.equal(await jetStreamAnswers(nats.url), true);
  } finally {
    await nats.stop();
  }
});

test('no server, or a server without JetStream, is UNAVAILABLE', async () => {
  const port = await freePort();
  const url = `nats://127.0.0.1:${port}`;
  const unavailable = (err: unknown): boolean =>
    isDroverError(err, 'UNAVAILABLE') && err.retryable && err.message.includes(url);
  await assert.rejects(jetStreamAnswers(url, 500), unavailable);
  const plain = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  try {
    // Wait until it accepts clients; JetStream still does not answer.
    for (let i = 0; ; i++) {
      const err = await jetStreamAnswers(url, 500).then(
        () => assert.fail('JetStream answered on a server without -js'),
        (e: unknown) => e,
      );
      assert.ok(unavailable(err), String(err));
      if (/JetStream does not answer/.test((err as Error).message)) break;
      assert.ok(i < 100, 'nats-server did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    plain.kill('SIGKILL');
  }
});
