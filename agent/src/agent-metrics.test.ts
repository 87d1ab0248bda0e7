/** The agent's metrics count what its handlers did: checkpoints, CRIU failures, jobs by state. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AgentHandlers } from '@drover/bus';
import { DroverError, ErrorCode } from '@drover/common';
import { AgentMetrics, criuFailures } from './agent-metrics.js';
import type { JobRecord } from './job-store.js';

const criuError = (request: string, line: string): DroverError =>
  new DroverError(ErrorCode.Criu, 'dump failed', {
    details: {
      request,
      logTail: ["(00.01) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE", line],
    },
  });

test('checkpoints, their times and CRIU failures by reason are counted from handler outcomes', async () => {
  const jobs = [{ state: 'running' }, { state: 'running' }, { state: 'exited' }] as JobRecord[];
  const m = new AgentMetrics({ list: async () => jobs }, { host: 'h1', criu: () => '4.2.1' });
  let fail: unknown = null;
  const handlers = m.instrument({
    checkpoint: async () => {
      if (fail) throw fail;
      return { dumpMs: 120, frozenMs: 300 };
    },
    migrate: async () => {
      const first = new DroverError(ErrorCode.Internal, 'stream broke');
      first.suppress(criuError('RESTORE', '(00.2) Error (criu/sk-inet.c:900): bind failed'));
      throw first;
    },
  } as unknown as AgentHandlers);
  const call = (op: string): Promise<unknown> =>
    (handlers as unknown as Record<string, (r: unknown) => Promise<unknown>>)[op]!({});
  await call('checkpoint');
  fail = criuError('DUMP', '(00.1) Error (criu/files-reg.c:77): cannot open');
  await assert.rejects(call('checkpoint'));
  await assert.rejects(call('migrate'));
  const text = await m.metrics.text();
  assert.match(text, /^drover_checkpoints_total\{outcome="done"\} 1$/m);
  assert.match(text, /^drover_checkpoints_total\{outcome="failed"\} 1$/m);
  assert.match(text, /^drover_checkpoint_dump_seconds_sum 0\.12$/m);
  assert.match(text, /^drover_checkpoint_frozen_seconds_count 1$/m);
  assert.match(text, /^drover_criu_failures_total\{request="dump",reason="files-reg"\} 1$/m);
  assert.match(text, /^drover_criu_failures_total\{request="restore",reason="sk-inet"\} 1$/m);
  assert.match(text, /^drover_agent_jobs\{state="running"\} 2$/m);
  assert.match(text, /^drover_agent_jobs\{state="exited"\} 1$/m);
  assert.match(text, /^drover_agent_jobs\{state="migrating"\} 0$/m);
  assert.match(text, /^drover_agent_info\{host="h1",criu="4\.2\.1"\} 1$/m);
  assert.match(text, /^nodejs_eventloop_lag_seconds /m);
});

test('a CRIU failure without an error line has reason unknown; other errors are none', () => {
  assert.deepEqual(criuFailures(new DroverError(ErrorCode.Criu, 'x', { details: {} })), [
    { request: 'unknown', reason: 'unknown' },
  ]);
  assert.deepEqual(criuFailures(new Error('plain')), []);
  assert.deepEqual(criuFailures('text'), []);
});
