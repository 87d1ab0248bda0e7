import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { EventLog } from '@drover/bus';
import { DroverError, ErrorCode, nullLogger } from '@drover/common';
import type { AuditEntry } from '@drover/protocol';
import { Audit, redactRequest } from './audit.js';

/** An event log that keeps appends in memory (the real one is tested in @drover/bus). */
function memLog(): { log: EventLog; got: { subject: string; value: AuditEntry }[] } {
  const got: { subject: string; value: AuditEntry }[] = [];
  const log = {
    append: async (subject: string, value: AuditEntry) => {
      got.push({ subject, value });
      return got.length;
    },
  } as unknown as EventLog;
  return { log, got };
}

test('job environment values never reach the audit; names do', () => {
  assert.deepEqual(
    redactRequest({
      command: ['/bin/x'],
      env: { TOKEN: 's3cret', PATH: '/bin' },
      nested: [{ env: { A: 'b' } }],
    }),
    { command: ['/bin/x'], env: { TOKEN: '***', PATH: '***' }, nested: [{ env: { A: '***' } }] },
  );
  // What is typed on a job's terminal (drover attach) may be a password.
  assert.deepEqual(redactRequest({ jobId: 'j1', data: 'hunter2\n' }), { jobId: 'j1', data: '***' });
});

test('changes are recorded asked-then-answered under the caller; reads are not', async () => {
  const { log, got } = memLog();
  const audit = new Audit(log, 'ctl-1', true, nullLogger);
  assert.equal(await audit.hook({ op: 'jobs', caller: null, request: {} }), null);
  const alice = { role: 'operator', name: 'alice' } as const;
  const done = await audit.hook({ op: 'migrate', caller: alice, request: { jobId: 'j1' } });
  assert.equal(got.length, 1, 'asked is stored before the controller acts');
  await done!({ result: { opId: 'op-7', state: 'done' } });
  const failed = await audit.hook({ op: 'run', caller: null, request: { env: { K: 'v' } } });
  await failed!({ error: new DroverError(ErrorCode.NotFound, 'no host h9') });
  assert.deepEqual(
    got.map((g) => [g.subject, g.value.phase, g.value.caller, g.value.outcome, g.value.resultId]),
    [
      [
        'drover.audit.operator.alice.migrate',
        'asked',
        { ...alice, verified: true },
        undefined,
        undefined,
      ],
      [
        'drover.audit.operator.alice.migrate',
        'answered',
        { ...alice, verified: true },
        'ok',
        'op-7',
      ],
      [
        'drover.audit.anonymous.anonymous.run',
        'asked',
        { role: 'anonymous', name: 'anonymous', verified: false },
        undefined,
        undefined,
      ],
      [
        'drover.audit.anonymous.anonymous.run',
        'answered',
        { role: 'anonymous', name: 'anonymous', verified: false },
        'NOT_FOUND',
        undefined,
      ],
    ],
  );
  assert.equal(got[1]!.value.id, got[0]!.value.id);
  assert.notEqual(got[2]!.value.id, got[0]!.value.id);
  assert.deepEqual(got[2]!.value.request, { env: { K: '***' } });
  assert.equal(got[3]!.value.message, 'no host h9');
});

test('no record, no action: a failing audit stream fails the request', async () => {
  const log = {
    append: async () => {
      throw new DroverError(ErrorCode.Unavailable, 'JetStream down', { retryable: true });
    },
  } as unknown as EventLog;
  await assert.rejects(
    new Audit(log, 'ctl-1', false, nullLogger).hook({ op: 'drain', caller: null, request: {} }),
    /JetStream down/,
  );
});
