/**
 * Secure by default, end to end: a testbed whose NATS requires TLS with the generated
 * authorization, agents and a controller with their certificates, and the real `drover` CLI as
 * an operator, a viewer and a stranger; an agent's credentials used against another agent.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { Bus } from '@drover/bus';
import { isDroverError } from '@drover/common';
import { agentSubject, controllerSubject, type AuditEntry } from '@drover/protocol';
import type { CliResult } from '../cluster/cli.js';
import { ClusterFixture, type CliIdentity } from '../cluster/fixture.js';

let f: ClusterFixture;
/** The operator's migration of the first test (h1 → h2). */
let migrationId: string;

/** `drover` with the given certificate (none: no TLS flags at all). */
const as = (who: CliIdentity, args: readonly string[], timeoutMs?: number): Promise<CliResult> =>
  f.as(who, args, timeoutMs);
const json = <T>(who: 'operator' | 'viewer', args: string[]): Promise<T> => f.jsonAs<T>(who, args);

/** Refused for the viewer's role: exit 6, says so, and quickly (not a timeout). */
function assertDenied(r: CliResult, what: string): void {
  assert.equal(r.code, 6, `${what}: exit ${r.code}: ${r.stderr}${r.stdout}`);
  assert.match(r.stderr, /not permitted/, what);
}

interface Job {
  id: string;
  host: string;
  state: string;
}

interface AuditRecord {
  seq: number;
  time: string;
  subject: string;
  entry: AuditEntry;
}

before(async () => {
  f = await ClusterFixture.start({ hosts: 2, secure: true });
});

after(async () => {
  await f?.stop();
});

describe('TLS and roles on NATS', () => {
  let job: Job;

  test('a client without a certificate cannot even connect', async () => {
    const r = await as('nobody', ['hosts'], 60_000);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, /cannot connect to NATS/);
    await assert.rejects(Bus.connect({ servers: f.urls, name: 'stranger' }));
  });

  test('an operator runs a job and migrates it (agents talk to each other as peers)', async () => {
    job = await json<Job>('operator', [
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
    const op = await json<{ state: string; migration: { migrationId: string } }>('operator', [
      'migrate',
      job.id,
      '--to',
      'h2',
    ]);
    assert.equal(op.state, 'done');
    migrationId = op.migration.migrationId;
    // The stream went over mutual TLS with the agents' certificates (the controller authorized
    // the migration on h2 first: without that, h2 refuses the source's migrate-prepare).
    for (const a of f.agents.agents) assert.match(a.process!.output(), /"tls":true/);
    const jobs = await json<{ jobs: Job[] }>('viewer', ['jobs']);
    assert.deepEqual(
      jobs.jobs.filter((j) => j.id === job.id && j.state === 'running').map((j) => j.host),
      ['h2'],
    );
  });

  test('a viewer can look but cannot run, migrate, drain, checkpoint or restore', async () => {
    const opsBefore = await json<{ ops: unknown[] }>('viewer', ['ops']);
    const jobsBefore = await json<{ jobs: Job[] }>('viewer', ['jobs']);
    const t0 = Date.now();
    assertDenied(await as('viewer', ['run', '--', '/bin/true']), 'run');
    assertDenied(await as('viewer', ['migrate', job.id, '--to', 'h1']), 'migrate');
    assertDenied(await as('viewer', ['drain', 'h2']), 'drain');
    assertDenied(await as('viewer', ['cordon', 'h1']), 'cordon');
    assertDenied(await as('viewer', ['checkpoint', job.id, '--name', 'viewer-set']), 'checkpoint');
    assertDenied(await as('viewer', ['restore', 'viewer-set']), 'restore');
    assertDenied(await as('viewer', ['stop', job.id]), 'stop');
    assert.ok(Date.now() - t0 < 60_000, 'refusals are immediate, not timeouts');
    // Nothing changed: no operation recorded, the job where it was, no host cordoned.
    assert.deepEqual(await json<{ ops: unknown[] }>('viewer', ['ops']), opsBefore);
    assert.deepEqual(await json<{ jobs: Job[] }>('viewer', ['jobs']), jobsBefore);
    const hosts = await json<{ hosts: { cordoned: boolean }[] }>('viewer', ['hosts']);
    assert.equal(
      hosts.hosts.some((h) => h.cordoned),
      false,
    );
  });

  test('an operator checkpoints the job into the object store and restores it', async () => {
    const set = await json<{ state: string }>('operator', [
      'checkpoint',
      job.id,
      '--name',
      'sec-set',
    ]);
    assert.equal(set.state, 'done', JSON.stringify(set));
    const restored = await json<{ state: string }>('operator', [
      'restore',
      'sec-set',
      '--to',
      'h1',
    ]);
    assert.equal(restored.state, 'done', JSON.stringify(restored));
    const jobs = await json<{ jobs: Job[] }>('viewer', ['jobs']);
    assert.deepEqual(
      jobs.jobs.filter((j) => j.id === job.id && j.state === 'running').map((j) => j.host),
      ['h1'],
    );
  });

  test('the audit stream records who asked for each change; names cannot be forged', async () => {
    // A job with a secret in its environment: the audit keeps the name, never the value.
    const secretJob = await json<Job>('operator', [
      'run',
      '--host',
      'h2',
      '--name',
      'secretive',
      '--env',
      'API_TOKEN=hunter2-do-not-log',
      '--',
      '/bin/sleep',
      '600',
    ]);
    const read = async (args: string[] = []): Promise<AuditRecord[]> =>
      (await json<{ entries: AuditRecord[] }>('viewer', ['audit', '--limit', '1000', ...args]))
        .entries;
    const all = await read();
    assert.doesNotMatch(JSON.stringify(all), /hunter2/);
    const byOp = (op: string): AuditRecord[] => all.filter((r) => r.entry.op === op);
    // Every change the operator made: asked (before acting) and answered, by the operator's
    // certificate identity, verified.
    for (const [op, resultId] of [
      ['run', job.id],
      ['migrate', undefined],
      ['checkpoint', undefined],
      ['restore', undefined],
      ['run', secretJob.id],
    ] as const) {
      const asked = byOp(op).filter((r) => r.entry.phase === 'asked');
      const answered = byOp(op).filter((r) => r.entry.phase === 'answered');
      assert.ok(asked.length >= 1 && answered.length === asked.length, `${op}: ${asked.length}`);
      for (const r of [...asked, ...answered]) {
        assert.deepEqual(r.entry.caller, { role: 'operator', name: 'operator', verified: true });
        assert.match(r.subject, new RegExp(`^drover\\.audit\\.operator\\.operator\\.${op}$`));
      }
      assert.ok(
        answered.every((r) => r.entry.outcome === 'ok'),
        JSON.stringify(answered),
      );
      if (resultId)
        assert.ok(
          answered.some((r) => r.entry.resultId === resultId),
          op,
        );
      // The answer follows its question.
      for (const a of answered) {
        const q = asked.find((r) => r.entry.id === a.entry.id);
        assert.ok(q && q.seq < a.seq, `${op}: answer ${a.entry.id} without its question`);
      }
    }
    const runSecret = byOp('run').find(
      (r) => r.entry.phase === 'asked' && JSON.stringify(r.entry.request).includes('secretive'),
    );
    assert.deepEqual((runSecret?.entry.request as { env?: unknown }).env, { API_TOKEN: '***' });
    // Reads are not recorded; the viewer's refused changes never reached the controller.
    assert.equal(byOp('hosts').length + byOp('jobs').length, 0);
    assert.ok(all.every((r) => r.entry.caller.role === 'operator'));
    // Filters: by caller and operation.
    const migrations = await read(['--caller', 'operator', '--op', 'migrate']);
    assert.deepEqual(
      migrations.map((r) => r.seq),
      byOp('migrate').map((r) => r.seq),
    );
    assert.deepEqual(await read(['--caller', 'viewer']), []);

    // Nobody may ask in another's name: NATS refuses the subject before the controller sees it.
    const tryAs = async (who: 'operator' | 'viewer', subject: string): Promise<void> => {
      const bus = await Bus.connect({
        servers: f.urls,
        name: `forger ${who}`,
        tls: f.tb.certs![who],
        requestTimeoutMs: 10_000,
      });
      try {
        await assert.rejects(
          bus.request(subject, { host: 'h1' }),
          (err: unknown) => isDroverError(err) && err.code === 'PERMISSION_DENIED',
          subject,
        );
      } finally {
        await bus.close();
      }
    };
    await tryAs('operator', controllerSubject('cordon', { role: 'operator', name: 'alice' }));
    await tryAs(
      'operator',
      controllerSubject('cordon', { role: 'controller', name: 'controller' }),
    );
    await tryAs('operator', controllerSubject('cordon'));
    await tryAs('viewer', controllerSubject('cordon', { role: 'operator', name: 'operator' }));
    await tryAs('viewer', controllerSubject('hosts', { role: 'operator', name: 'operator' }));
    assert.equal((await read()).length, all.length, 'forged requests recorded nothing');
    const hosts = await json<{ hosts: { cordoned: boolean }[] }>('viewer', ['hosts']);
    assert.ok(hosts.hosts.every((h) => !h.cordoned));
    assert.equal((await as('operator', ['stop', secretJob.id])).code, 0);
  });

  test('an agent cannot push a migration onto a peer without the controller authorizing it', async () => {
    const h1 = await Bus.connect({
      servers: f.urls,
      name: 'h1 pushing a job',
      tls: f.tb.certs!.identity('agent', 'h1'),
      requestTimeoutMs: 10_000,
    });
    const h2 = f.agent('h2');
    const before = await h2.client.call('migrations-list', {});
    try {
      const prepare = {
        migrationId: 'mig-pushed',
        source: 'h1',
        ticket: 'f'.repeat(64),
        mode: 'stop-copy',
        job: {
          id: 'job-pushed',
          name: 'pushed',
          kind: 'namespaced',
          command: ['/bin/sh', '-c', 'sleep 1000'],
          cwd: '/',
          env: {},
          shellJob: false,
          startedAt: new Date().toISOString(),
          jobDir: '/srv/drover/jobs/job-pushed',
        },
        memoryBytes: 0,
        cpuFlags: [],
        pids: [],
      };
      await assert.rejects(
        h1.request(agentSubject('h2', 'migrate-prepare'), prepare),
        (err: unknown) => {
          assert.ok(isDroverError(err, 'PERMISSION_DENIED'), String(err));
          assert.match((err as Error).message, /not authorized/);
          return true;
        },
      );
    } finally {
      await h1.close();
    }
    // Nothing was created on h2: no migration record, no job, no job directory.
    assert.deepEqual(await h2.client.call('migrations-list', {}), before);
    await assert.rejects(
      h2.client.call('migrate-status', { migrationId: 'mig-pushed', ticket: 'f'.repeat(64) }),
      (e) => isDroverError(e, 'NOT_FOUND'),
    );
    await assert.rejects(h2.client.call('inspect', { jobId: 'job-pushed' }), (e) =>
      isDroverError(e, 'NOT_FOUND'),
    );
    assert.equal(existsSync(h2.srvPath('/srv/drover/jobs/job-pushed')), false);
  });

  test("knowing a migration's id is not enough to abort, commit or read it", async () => {
    // Its two parties hold the controller's ticket; anyone else (here even a controller
    // identity, the test runner) is refused, and the records do not change.
    const wrong = 'x'.repeat(64);
    const h1 = f.agent('h1');
    const h2 = f.agent('h2');
    const before = [
      await h1.client.call('migrations-list', {}),
      await h2.client.call('migrations-list', {}),
    ];
    const refused = (p: Promise<unknown>): Promise<void> =>
      assert.rejects(p, (e: unknown) => isDroverError(e, 'PERMISSION_DENIED'));
    await refused(h2.client.call('migrate-abort', { migrationId, ticket: wrong }));
    await refused(h2.client.call('migrate-commit', { migrationId, ticket: wrong }));
    await refused(h2.client.call('migrate-status', { migrationId, ticket: wrong }));
    await refused(h1.client.call('migrate-status', { migrationId, ticket: wrong }));
    assert.deepEqual(
      [await h1.client.call('migrations-list', {}), await h2.client.call('migrations-list', {})],
      before,
    );
  });

  test("an agent's credentials cannot command another agent or the controller", async () => {
    const h1 = await Bus.connect({
      servers: f.urls,
      name: 'h1 gone rogue',
      tls: f.tb.certs!.identity('agent', 'h1'),
      requestTimeoutMs: 10_000,
    });
    try {
      const denied = async (subject: string): Promise<void> => {
        await assert.rejects(h1.request(subject, {}), (err: unknown) => {
          assert.ok(isDroverError(err) && err.code === 'PERMISSION_DENIED', String(err));
          return true;
        });
      };
      await denied(agentSubject('h2', 'run'));
      await denied(agentSubject('h2', 'signal'));
      await denied(agentSubject('h2', 'checkpoint'));
      await denied(controllerSubject('run'));
      await denied(controllerSubject('drain'));
      await denied(controllerSubject('run', { role: 'agent', name: 'h1' }));
      await denied(controllerSubject('hosts', { role: 'agent', name: 'h1' }));
      // Nor allow itself a migration: only the controller authorizes one on a destination.
      await denied(agentSubject('h2', 'migrate-authorize'));
      // The one thing it may ask a peer: facts for a migration.
      const info = (await h1.request(agentSubject('h2', 'info'), {})) as { hostId?: string };
      assert.ok(info);
    } finally {
      await h1.close();
    }
    // h1's own agent and the controller never hit a permission they needed.
    for (const out of [
      f.controller.output(),
      ...f.agents.agents.map((a) => a.process?.output() ?? ''),
    ])
      assert.doesNotMatch(out, /Permissions Violation/i);
    // h2 still runs what it ran, untouched.
    const jobs = await json<{ jobs: Job[] }>('viewer', ['jobs']);
    assert.ok(jobs.jobs.every((j) => j.state !== 'failed'));
  });
});
