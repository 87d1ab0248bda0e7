import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError, ErrorCode, isDroverError } from '@drover/common';
import { controllerSubject, type ControllerReplies, type Identity } from '@drover/protocol';
import {
  ControllerClient,
  serveControllerApi,
  type ControllerAudit,
  type ControllerHandlers,
} from './controller-rpc.js';
import { startTestNats, type TestNats } from './test-nats.js';

// A real nats-server on loopback (the layer below is not faked).
let nats: TestNats;

before(async () => {
  nats = await startTestNats('ctl-rpc-test', 2000);
});

after(async () => {
  await nats?.stop();
});

/** `cordon` succeeds, `uncordon` fails typed; every call is counted. */
function handlers(calls: string[]): ControllerHandlers {
  const never = (): Promise<never> => Promise.reject(new Error('not under test'));
  const h: Record<string, unknown> = new Proxy(
    {},
    { get: (_t, op: string) => (op === 'then' ? undefined : never) },
  );
  return {
    ...(h as ControllerHandlers),
    cordon: async (req) => {
      calls.push(`cordon ${req.host}`);
      return { host: req.host } as ControllerReplies['cordon'];
    },
    uncordon: async (req) => {
      calls.push(`uncordon ${req.host}`);
      throw new DroverError(ErrorCode.FailedPrecondition, `cannot uncordon ${req.host}`);
    },
  };
}

test('the audit hook sees each request with its caller before it runs, then its outcome', async () => {
  const calls: string[] = [];
  const seen: string[] = [];
  let refuse = false;
  const audit: ControllerAudit = async ({ op, caller, request }) => {
    const who = caller ? `${caller.role}/${caller.name}` : 'nobody';
    seen.push(`asked ${op} by ${who} ${JSON.stringify(request)}`);
    if (refuse) throw new DroverError(ErrorCode.Unavailable, 'audit stream down');
    return async ({ result, error }) => {
      seen.push(`answered ${op}: ${error ? String(error) : JSON.stringify(result)}`);
      throw new Error('the record of an outcome failing changes no reply');
    };
  };
  serveControllerApi(nats.bus, handlers(calls), undefined, audit);
  await nats.bus.flush();

  const alice: Identity = { role: 'operator', name: 'alice' };
  const asAlice = (op: string, body: unknown): Promise<unknown> =>
    nats.bus.request(controllerSubject(op, alice), body);
  assert.deepEqual(await asAlice('cordon', { host: 'h1' }), { host: 'h1' });
  await assert.rejects(asAlice('uncordon', { host: 'h2' }), (e: unknown) =>
    isDroverError(e, 'FAILED_PRECONDITION'),
  );
  // A client without a certificate asks in nobody's name.
  assert.deepEqual(await new ControllerClient(nats.bus).call('cordon', { host: 'h3' }), {
    host: 'h3',
  });
  assert.deepEqual(seen, [
    'asked cordon by operator/alice {"host":"h1"}',
    'answered cordon: {"host":"h1"}',
    'asked uncordon by operator/alice {"host":"h2"}',
    'answered uncordon: DroverError: cannot uncordon h2',
    'asked cordon by nobody {"host":"h3"}',
    'answered cordon: {"host":"h3"}',
  ]);
  assert.deepEqual(calls, ['cordon h1', 'uncordon h2', 'cordon h3']);

  // No record, no action: the request fails with the audit's error and no handler runs.
  refuse = true;
  await assert.rejects(asAlice('cordon', { host: 'h4' }), (e: unknown) =>
    isDroverError(e, 'UNAVAILABLE'),
  );
  assert.deepEqual(calls, ['cordon h1', 'uncordon h2', 'cordon h3']);

  // Invalid requests and malformed caller tokens never reach the audit or a handler.
  const before = seen.length;
  await assert.rejects(asAlice('cordon', { host: '../x' }), (e: unknown) =>
    isDroverError(e, 'INVALID_ARGUMENT'),
  );
  await assert.rejects(
    nats.bus.request('drover.ctl.cordon.operator', { host: 'h1' }),
    (e: unknown) => isDroverError(e, 'NOT_FOUND'),
  );
  await assert.rejects(
    nats.bus.request('drover.ctl.cordon.root.alice', { host: 'h1' }),
    (e: unknown) => isDroverError(e, 'NOT_FOUND'),
  );
  assert.equal(seen.length, before);
});
