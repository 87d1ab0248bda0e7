import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError, ErrorCode, isDroverError } from '@drover/common';
import type { AgentReplies } from '@drover/protocol';
import { AgentClient, serveAgentApi, type AgentHandlers } from './agent-rpc.js';
import { Bus } from './connection.js';
import { freePort, startTestNats, type TestNats } from './test-nats.js';

// A real nats-server on loopback (the layer below is not faked).
let nats: TestNats;
let bus: Bus;

before(async () => {
  nats = await startTestNats('bus-test', 2000);
  bus = nats.bus;
});

after(async () => {
  await nats?.stop();
});

/** Handlers that answer `info` and fail `inspect` with a typed error; the rest are not reached. */
function handlers(calls: string[]): AgentHandlers {
  const never = (): Promise<never> => Promise.reject(new Error('not under test'));
  const h: Record<string, unknown> = new Proxy(
    {},
    { get: (_t, op: string) => (op === 'then' ? undefined : never) },
  );
  return {
    ...(h as AgentHandlers),
    info: async () => {
      calls.push('info');
      return { host: 'hx' } as AgentReplies['info'];
    },
    inspect: async (req) => {
      calls.push(`inspect ${req.jobId}`);
      throw new DroverError(ErrorCode.NotFound, `no job ${req.jobId}`, {
        details: { jobId: req.jobId },
      });
    },
  };
}

test('requests are validated before handlers run; failures come back typed', async () => {
  const calls: string[] = [];
  serveAgentApi(bus, 'hx', handlers(calls));
  await bus.flush();
  const client = new AgentClient(bus, 'hx');
  assert.equal((await client.call('info', {})).host, 'hx');
  await assert.rejects(client.call('inspect', { jobId: 'job-1' }), (e: unknown) => {
    assert.ok(isDroverError(e, 'NOT_FOUND'));
    assert.equal((e as DroverError).details.jobId, 'job-1');
    return true;
  });
  // Invalid payloads never reach a handler.
  await assert.rejects(client.call('inspect', { jobId: '../x' }), (e: unknown) =>
    isDroverError(e, 'INVALID_ARGUMENT'),
  );
  await assert.rejects(
    bus.request('drover.agent.hx.inspect', new TextEncoder().encode('{bad')),
    (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'),
  );
  await assert.rejects(bus.request('drover.agent.hx.bogus', {}), (e: unknown) =>
    isDroverError(e, 'NOT_FOUND'),
  );
  assert.deepEqual(calls, ['info', 'inspect job-1']);
});

test('nobody serving is UNAVAILABLE (retryable); an unreachable server is UNAVAILABLE', async () => {
  await assert.rejects(new AgentClient(bus, 'nobody').call('info', {}), (e: unknown) => {
    assert.ok(isDroverError(e, 'UNAVAILABLE'));
    assert.equal((e as DroverError).retryable, true);
    return true;
  });
  const port = await freePort();
  await assert.rejects(
    Bus.connect({ servers: [`nats://127.0.0.1:${port}`], name: 'x' }),
    (e: unknown) => isDroverError(e, 'UNAVAILABLE'),
  );
});

test('a handler that never answers times out as TIMEOUT', async () => {
  bus.serve('drover.agent.slow.info', () => new Promise(() => undefined));
  await bus.flush();
  await assert.rejects(bus.request('drover.agent.slow.info', {}, 200), (e: unknown) =>
    isDroverError(e, 'TIMEOUT'),
  );
});
