/**
 * The generated NATS security config against a real nats-server: TLS required, each certificate
 * mapped to its identity, and each role held to exactly its permissions (no CRIU, no testbed:
 * stand-in servers answer on the controller's and agents' subjects).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Bus, ObjectFiles, StateStore } from '@drover/bus';
import {
  identityPaths,
  initCa,
  initCluster,
  issueIdentity,
  NATS_SECURITY_FILE,
} from '@drover/certs';
import { isDroverError } from '@drover/common';
import {
  agentSubject,
  CONTROLLER_WILDCARD,
  controllerSubject,
  heartbeatSubject,
  okReply,
  type Role,
} from '@drover/protocol';
import { freePort, sleep } from '../util/net.js';

describe('NATS roles from generated certificates', () => {
  let dir = '';
  let url = '';
  let server: ChildProcess | undefined;
  const open: Bus[] = [];
  /** What the stand-in controller and agents were asked. */
  const seen: string[] = [];

  const as = async (role: Role, name: string): Promise<Bus> => {
    const bus = await Bus.connect({
      servers: [url],
      name: `${role} ${name}`,
      tls: identityPaths(join(dir, 'certs'), { role, name }),
      requestTimeoutMs: 5000,
      noRespondersGraceMs: 500,
    });
    open.push(bus);
    return bus;
  };

  const denied = async (p: Promise<unknown>): Promise<void> => {
    const t0 = Date.now();
    await assert.rejects(p, (err: unknown) => {
      assert.ok(isDroverError(err), String(err));
      assert.equal(err.code, 'PERMISSION_DENIED', err.message);
      return true;
    });
    assert.ok(Date.now() - t0 < 3000, 'a refusal is reported at once, not as a timeout');
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'drover-roles-'));
    await initCluster(join(dir, 'certs'), {
      serverAddresses: ['127.0.0.1'],
      agents: ['h1', 'h2'],
      operators: ['alice'],
      viewers: ['bob'],
    });
    const port = await freePort();
    url = `tls://127.0.0.1:${port}`;
    writeFileSync(
      join(dir, 'nats.conf'),
      `listen: "127.0.0.1:${port}"\njetstream { store_dir: "${join(dir, 'js')}" }\n` +
        `include ./certs/${NATS_SECURITY_FILE}\n`,
    );
    server = spawn('nats-server', ['-c', join(dir, 'nats.conf')], { stdio: 'ignore' });
    for (let i = 0; ; i++) {
      try {
        const ctl = await as('controller', 'controller');
        ctl.serve(CONTROLLER_WILDCARD, async (subject) => {
          seen.push(subject);
          return okReply({ ok: true });
        });
        break;
      } catch (err) {
        if (i > 100) throw err;
        await sleep(100);
      }
    }
    for (const h of ['h1', 'h2']) {
      const agent = await as('agent', h);
      agent.serve(agentSubject(h, '*'), async (subject) => {
        seen.push(subject);
        return okReply({ ok: true });
      });
      await agent.flush();
    }
  });

  after(async () => {
    for (const b of open) await b.close().catch(() => {});
    if (server?.pid) process.kill(server.pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a client without a certificate, or with one of another CA', async () => {
    await assert.rejects(Bus.connect({ servers: [url], name: 'anonymous' }));
    const other = join(dir, 'other-ca');
    await initCa(other);
    const mallory = await issueIdentity(other, { role: 'operator', name: 'alice' });
    await assert.rejects(
      Bus.connect({
        servers: [url],
        name: 'forged alice',
        tls: {
          ...mallory,
          caFile: identityPaths(join(dir, 'certs'), { role: 'operator', name: 'alice' }).caFile,
        },
      }),
    );
  });

  it('lets a viewer look but not change anything', async () => {
    const bob = await as('viewer', 'bob');
    const asBob = { role: 'viewer', name: 'bob' } as const;
    assert.deepEqual(await bob.request(controllerSubject('hosts', asBob), {}), { ok: true });
    assert.deepEqual(await bob.request(controllerSubject('jobs', asBob), {}), { ok: true });
    const before = seen.length;
    for (const op of ['run', 'migrate', 'drain', 'checkpoint', 'restore', 'stop', 'cordon']) {
      await denied(bob.request(controllerSubject(op, asBob), {}));
    }
    // Nor may it look in another's name, or without one.
    await denied(bob.request(controllerSubject('hosts'), {}));
    await denied(bob.request(controllerSubject('hosts', { role: 'viewer', name: 'carol' }), {}));
    await denied(bob.request(agentSubject('h1', 'run'), {}));
    await sleep(200);
    assert.deepEqual(seen.slice(before), [], 'nothing reached the controller or an agent');
  });

  it('lets an operator change things through the controller only', async () => {
    const alice = await as('operator', 'alice');
    const asAlice = { role: 'operator', name: 'alice' } as const;
    assert.deepEqual(await alice.request(controllerSubject('run', asAlice), {}), { ok: true });
    assert.ok(seen.includes('drover.ctl.run.operator.alice'));
    // Only in her own name: the controller learns who asks from the subject.
    await denied(alice.request(controllerSubject('run'), {}));
    await denied(alice.request(controllerSubject('run', { role: 'operator', name: 'bob' }), {}));
    await denied(alice.request(controllerSubject('run', { role: 'controller', name: 'x' }), {}));
    await denied(alice.request(agentSubject('h1', 'run'), {}));
  });

  it('keeps an agent to its own subjects', async () => {
    const h1 = await as('agent', 'h1');
    // The migration handshake with a peer is allowed; commanding it is not.
    assert.deepEqual(await h1.request(agentSubject('h2', 'info'), {}), { ok: true });
    assert.deepEqual(await h1.request(agentSubject('h2', 'migrate-prepare'), {}), { ok: true });
    const before = seen.length;
    for (const op of [
      'run',
      'signal',
      'checkpoint',
      'restore',
      'migrate',
      // Only the controller may authorize an incoming migration on an agent.
      'migrate-authorize',
      'freeze',
      'freeze-many',
      'remove',
    ]) {
      await denied(h1.request(agentSubject('h2', op), {}));
    }
    await denied(h1.request(controllerSubject('run'), {}));
    await denied(h1.request(controllerSubject('hosts'), {}));
    await denied(h1.request(controllerSubject('hosts', { role: 'agent', name: 'h1' }), {}));
    await sleep(200);
    assert.deepEqual(seen.slice(before), []);

    // Its own heartbeat reaches the controller; one in h2's name does not.
    const ctl = await as('controller', 'controller');
    const beats: string[] = [];
    ctl.subscribe('drover.hb.*', (s) => beats.push(s));
    await ctl.flush();
    h1.publish(heartbeatSubject('h1'), {});
    h1.publish(heartbeatSubject('h2'), {});
    h1.publish('drover.evt.h2.job', {});
    await h1.flush();
    await sleep(300);
    assert.deepEqual(beats, [heartbeatSubject('h1')]);

    // It cannot listen to another agent's requests or to others' replies.
    const overheard: string[] = [];
    h1.subscribe(agentSubject('h2', '>'), (s) => overheard.push(s));
    h1.subscribe('_INBOX.>', (s) => overheard.push(s));
    await h1.flush().catch(() => {});
    await ctl.request(agentSubject('h2', 'info'), {});
    await sleep(200);
    assert.deepEqual(overheard, []);
  });

  it('gives an agent the image-set object store and nothing else of JetStream', async () => {
    const ctl = await as('controller', 'controller');
    const ctlObjects = await ObjectFiles.open(ctl, { bucket: 'drover_images', create: true });
    await StateStore.open(ctl, { bucket: 'drover_ops', retryForMs: 0 });
    const h1 = await as('agent', 'h1');
    const objects = await ObjectFiles.open(h1, { bucket: 'drover_images', create: false });
    const data = Buffer.alloc(1536 * 1024, 7);
    async function* one(): AsyncGenerator<Uint8Array> {
      yield data;
    }
    await objects.put('set/job/pages.img', one());
    const got: Buffer[] = [];
    for await (const c of (
      await ObjectFiles.open(await as('agent', 'h2'), { bucket: 'drover_images', create: false })
    ).get('set/job/pages.img'))
      got.push(Buffer.from(c));
    assert.equal(Buffer.concat(got).equals(data), true);
    assert.equal((await ctlObjects.list('set/')).length, 1);
    // An agent's upload cut off half-way, with chunks in flight: the agent may not purge what
    // landed, so the put says it was interrupted (retryable), and no object of that name appears.
    async function* cut(): AsyncGenerator<Uint8Array> {
      yield Buffer.alloc(3 * 1024 * 1024, 1);
      throw new Error('read failed');
    }
    await assert.rejects(objects.put('set/job/cut.img', cut()), (err: unknown) => {
      assert.ok(isDroverError(err, 'UNAVAILABLE'), String(err));
      assert.equal(err.retryable, true);
      assert.match(err.message, /interrupted/);
      return true;
    });
    assert.deepEqual(
      (await ctlObjects.list('set/')).map((o) => o.name),
      ['set/job/pages.img'],
    );
    assert.equal(await ctlObjects.sweepOrphanChunks(0), 1, 'the cut upload left its chunks');
    // The controller's state (leases, operations) is out of an agent's reach.
    await assert.rejects(
      StateStore.open(h1, { bucket: 'drover_ops', retryForMs: 0, timeoutMs: 1000 }),
    );
  });
});
