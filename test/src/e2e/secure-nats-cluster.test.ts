/**
 * Drover on a secure 3-node NATS cluster (client TLS with the generated authorization, routes
 * that require TLS with a route certificate): agents and a controller with their certificates,
 * state replicated three ways, and the real `drover` CLI as an operator (runs and migrates a job)
 * and a viewer (may look, may not migrate).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentCluster, ControllerProcess, Testbed } from '@drover/testbed';
import { droverAs, type CliResult } from '../cluster/cli.js';
import { waitFor } from './helpers.js';

let tb: Testbed;
let cluster: AgentCluster;
let ctl: ControllerProcess;
let urls: string[];

function as(who: 'operator' | 'viewer', args: readonly string[]): Promise<CliResult> {
  return droverAs(urls, tb.certs![who], args);
}

async function json<T>(who: 'operator' | 'viewer', args: string[]): Promise<T> {
  const r = await as(who, ['--json', ...args]);
  assert.equal(r.code, 0, `drover ${args.join(' ')} as ${who} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

interface Job {
  id: string;
  host: string;
  state: string;
}

before(async () => {
  tb = await Testbed.create({ hosts: 3, nats: 'cluster', secure: true });
  urls = [...tb.nats!.urls];
  cluster = await AgentCluster.start(tb);
  ctl = await ControllerProcess.start(tb, { extraArgs: ['--replicas', '3'] });
  await waitFor(async () => {
    const r = await as('viewer', ['hosts', '--json']);
    return r.code === 0 && (JSON.parse(r.stdout) as { hosts: unknown[] }).hosts.length === 3;
  }, 30_000);
});

after(async () => {
  await ctl?.kill();
  await cluster?.close();
  await tb?.teardown();
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
    for (const s of tb.nats!.servers) {
      const r = await fetch(`${s.monitorUrl}/jsz?accounts=true&streams=true`);
      const jsz = (await r.json()) as {
        account_details?: { stream_detail?: { name: string }[] }[];
      };
      const names = (jsz.account_details ?? []).flatMap((a) =>
        (a.stream_detail ?? []).map((d) => d.name),
      );
      assert.ok(names.includes('KV_drover_ops'), `${s.name} holds ${names.join(', ')}`);
    }
    for (const out of [ctl.output(), ...cluster.agents.map((a) => a.process?.output() ?? '')])
      assert.doesNotMatch(out, /Permissions Violation/i);
  });
});
