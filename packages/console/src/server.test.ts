/**
 * The console's server over a fake controller: signing in with the printed token, what a page
 * may read, the live feed, and actions only when allowed (read-only by default, never for a
 * viewer). The page itself is tested in Chromium (test/src/e2e/console.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import type { Bus } from '@drover/bus';
import { isDroverError } from '@drover/common';
import { startConsole } from './server.js';

interface FakeBus {
  bus: Bus;
  asked: { subject: string; payload: unknown }[];
  publish(subject: string, value: unknown): void;
}

function fakeBus(identity: { role: string; name: string } | null): FakeBus {
  const asked: { subject: string; payload: unknown }[] = [];
  const subs: ((s: string, v: unknown) => void)[] = [];
  const replies: Record<string, unknown> = {
    hosts: {
      hosts: [
        {
          host: 'h1',
          reachable: true,
          cordoned: false,
          lastSeen: new Date().toISOString(),
          info: {},
        },
      ],
    },
    jobs: { jobs: [{ id: 'job-a', host: 'h1', state: 'running' }] },
    ops: { ops: [] },
    'images-list': { sets: [] },
    audit: { entries: [] },
    migrate: { opId: 'op-1', state: 'done' },
  };
  const bus = {
    identity,
    async request(subject: string, payload: unknown) {
      asked.push({ subject, payload });
      const op = subject.split('.')[2]!;
      return replies[op] ?? {};
    },
    subscribe(_subject: string, fn: (s: string, v: unknown) => void) {
      subs.push(fn);
      return () => undefined;
    },
  } as unknown as Bus;
  return { bus, asked, publish: (s, v) => subs.forEach((f) => f(s, v)) };
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function http(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: opts.method ?? 'GET', headers: opts.headers ?? {} },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.once('error', reject);
    req.end(opts.body);
  });
}

async function signIn(loginUrl: string): Promise<string> {
  const r = await http(loginUrl);
  assert.equal(r.status, 303);
  assert.equal(r.headers.location, '/');
  const cookie = String(r.headers['set-cookie']);
  assert.match(cookie, /HttpOnly; SameSite=Strict/);
  return cookie.split(';')[0]!;
}

test('a browser gets in only with the printed token; then it reads the cluster and follows it live', async () => {
  const f = fakeBus({ role: 'operator', name: 'alice' });
  const c = await startConsole({
    bus: f.bus,
    listen: '127.0.0.1:0',
    actions: false,
    pollMs: 60_000,
  });
  try {
    assert.match(c.loginUrl, /^http:\/\/127\.0\.0\.1:\d+\/login\?token=[0-9a-f]{48}$/);
    assert.equal((await http(c.url)).status, 401);
    assert.equal((await http(`${c.url}api/state`)).status, 401);
    assert.equal((await http(`${c.url}login?token=${'0'.repeat(48)}`)).status, 401);
    const cookie = await signIn(c.loginUrl);
    const page = await http(c.url, { headers: { cookie } });
    assert.equal(page.status, 200);
    assert.match(page.body, /<script type="module" src="\/app.js">/);
    assert.match(String(page.headers['content-security-policy']), /default-src 'self'/);
    assert.equal((await http(`${c.url}app.js`, { headers: { cookie } })).status, 200);
    const state = JSON.parse((await http(`${c.url}api/state`, { headers: { cookie } })).body);
    assert.deepEqual(state.identity, { role: 'operator', name: 'alice' });
    assert.equal(state.actions, false);
    assert.equal(state.snapshot.jobs[0].id, 'job-a');
    assert.equal(state.snapshot.error, null);
    // The feed: hello, the current picture, then agents' events as they come.
    const feed = await new Promise<string>((resolve, reject) => {
      const req = request(`${c.url}api/events`, { headers: { cookie } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => {
          text += d.toString();
          if (text.includes('event: snapshot') && !text.includes('event: event')) {
            f.publish('drover.evt.h1.migration', { jobId: 'job-a', phase: 'transferring' });
          }
          if (text.includes('event: event')) {
            req.destroy();
            resolve(text);
          }
        });
      });
      req.once('error', reject);
      req.end();
    });
    assert.match(
      feed,
      /event: hello\ndata: \{"identity":\{"role":"operator","name":"alice"\},"actions":false\}/,
    );
    assert.match(
      feed,
      /event: event\ndata: \{"host":"h1","kind":"migration","value":\{"jobId":"job-a","phase":"transferring"\}\}/,
    );
  } finally {
    await c.close();
  }
});

test('read-only by default: actions are refused and nothing is asked of the controller', async () => {
  const f = fakeBus({ role: 'operator', name: 'alice' });
  const c = await startConsole({
    bus: f.bus,
    listen: '127.0.0.1:0',
    actions: false,
    pollMs: 60_000,
  });
  try {
    const cookie = await signIn(c.loginUrl);
    const r = await http(`${c.url}api/actions/migrate`, {
      method: 'POST',
      headers: { cookie, 'x-drover-console': '1', 'content-type': 'application/json' },
      body: JSON.stringify({ jobId: 'job-a', to: 'h2' }),
    });
    assert.equal(r.status, 403);
    assert.match(JSON.parse(r.body).error, /read-only/);
    assert.equal(f.asked.filter((a) => a.subject.startsWith('drover.ctl.migrate')).length, 0);
  } finally {
    await c.close();
  }
});

test('with actions, an operator acts through the controller; bad requests and forged ones are refused', async () => {
  const f = fakeBus({ role: 'operator', name: 'alice' });
  const c = await startConsole({
    bus: f.bus,
    listen: '127.0.0.1:0',
    actions: true,
    pollMs: 60_000,
  });
  try {
    const cookie = await signIn(c.loginUrl);
    const post = (op: string, body: unknown, headers: Record<string, string> = {}) =>
      http(`${c.url}api/actions/${op}`, {
        method: 'POST',
        headers: { cookie, 'content-type': 'application/json', ...headers },
        body: JSON.stringify(body),
      });
    // A cross-site form cannot send the header.
    assert.equal((await post('migrate', { jobId: 'job-a' })).status, 403);
    const bad = await post('migrate', { jobId: '../x' }, { 'x-drover-console': '1' });
    assert.equal(bad.status, 400);
    assert.match(JSON.parse(bad.body).error, /^jobId: must be an id/);
    assert.equal((await post('run', { command: ['x'] }, { 'x-drover-console': '1' })).status, 404);
    const ok = await post('migrate', { jobId: 'job-a', to: 'h2' }, { 'x-drover-console': '1' });
    assert.equal(ok.status, 202);
    for (let i = 0; i < 50 && !f.asked.some((a) => a.subject.startsWith('drover.ctl.migrate')); i++)
      await new Promise((r) => setTimeout(r, 10));
    const asked = f.asked.find((a) => a.subject.startsWith('drover.ctl.migrate'))!;
    // Asked with the console's own identity: NATS holds it to that certificate's role.
    assert.equal(asked.subject, 'drover.ctl.migrate.operator.alice');
    assert.deepEqual(asked.payload, { jobId: 'job-a', to: 'h2' });
  } finally {
    await c.close();
  }
});

test("a viewer's certificate cannot start a console that acts", async () => {
  await assert.rejects(
    startConsole({
      bus: fakeBus({ role: 'viewer', name: 'bob' }).bus,
      listen: '127.0.0.1:0',
      actions: true,
    }),
    (e: unknown) => isDroverError(e, 'PERMISSION_DENIED') && /viewer bob/.test(e.message),
  );
  await assert.rejects(
    startConsole({ bus: fakeBus(null).bus, listen: 'nowhere', actions: false }),
    (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'),
  );
});
