import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DroverError, ErrorCode, isDroverError } from '@drover/common';
import type { AgentReplies } from '@drover/protocol';
import { AgentClient, serveAgentApi, type AgentHandlers } from './agent-rpc.js';
import { Bus } from './connection.js';

// A real nats-server on loopback (the layer below is not faked).
let server: ChildProcess;
let dir: string;
let url: string;
let bus: Bus;

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'drover-bus-test-'));
  const port = await freePort();
  url = `nats://127.0.0.1:${port}`;
  server = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir], {
    stdio: 'ignore',
  });
  for (let i = 0; ; i++) {
    try {
      bus = await Bus.connect({ servers: [url], name: 'bus-test', requestTimeoutMs: 2000 });
      break;
    } catch (err) {
      if (i > 100) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
});

after(async () => {
  await bus?.close();
  if (server?.pid) process.kill(server.pid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
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
