/**
 * Drover on a secure 3-node NATS cluster (client TLS with the generated authorization, routes
 * that require TLS with a route certificate): agents and a controller with their certificates,
 * state replicated three ways, and the real `drover` CLI as an operator (runs and migrates a job)
 * and a viewer (may look, may not migrate).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterFixture } from '../cluster/fixture.js';

let f: ClusterFixture;

const as = (
  who: 'operator' | 'viewer',
  args: readonly string[],
): ReturnType<ClusterFixture['as']> => f.as(who, args);
const json = <T>(who: 'operator' | 'viewer', args: string[]): Promise<T> => f.jsonAs<T>(who, args);

interface Job {
  id: string;
  host: string;
  state: string;
}

before(async () => {
  f = await ClusterFixture.start({
    hosts: 3,
    nats: 'cluster',
    secure: true,
    controller: { extraArgs: ['--replicas', '3'] },
    hostsTimeoutMs: 30_000,
  });
});

after(async () => {
  await f?.stop();
});

describe('Drover on a secure NATS cluster', () => {
  test('an operator migrates a job; a viewer may not; the state has three copies', async () => {
    const job = await json<Job>('operator', [
      'run',
      '--host',
      'h1',
      '--name',
      'loop',
      '--',
      '/bin/sh',
      '-c',
      'while :; do sleep 0.2; done',
    ]);
    assert.equal(job.host, 'h1');
    const denied = await as('viewer', ['migrate', job.id, '--to', 'h3']);
    assert.equal(denied.code, 6, denied.stderr);
    const op = await json<{ state: string }>('operator', ['migrate', job.id, '--to', 'h2']);
    assert.equal(op.state, 'done');
    const jobs = await json<{ jobs: Job[] }>('viewer', ['jobs']);
    assert.deepEqual(
      jobs.jobs.filter((j) => j.id === job.id && j.state === 'running').map((j) => j.host),
      ['h2'],
    );
    // The operations bucket lives on every member (routes carry its replication, over TLS).
    for (const s of f.tb.nats!.servers) {
      const r = await fetch(`${s.monitorUrl}/jsz?accounts=true&streams=true`);
      const jsz = (await r.json()) as {
        account_details?: { stream_detail?: { name: string }[] }[];
      };
      const names = (jsz.account_details ?? []).flatMap((a) =>
        (a.stream_detail ?? []).map((d) => d.name),
      );
      assert.ok(names.includes('KV_drover_ops'), `${s.name} holds ${names.join(', ')}`);
    }
    for (const out of [
      f.controller.output(),
      ...f.agents.agents.map((a) => a.process?.output() ?? ''),
    ])
      assert.doesNotMatch(out, /Permissions Violation/i);
  });
});
