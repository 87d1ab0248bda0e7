import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { isDroverError } from '@drover/common';
import { Metrics, parseListenAddress, serveMetrics } from './metrics.js';

function get(url: string, method = 'GET'): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type']) }),
      );
    });
    req.once('error', reject);
    req.end();
  });
}

test('metrics are served over HTTP on the chosen address, with Node event-loop lag', async () => {
  const m = new Metrics();
  const c = m.counter('drover_test_things_total', 'things', ['kind']);
  c.inc({ kind: 'a' }, 2);
  let calls = 0;
  m.gauge('drover_test_level', 'a level read at scrape', [], (g) => {
    calls++;
    g.set(42);
  });
  m.histogram('drover_test_seconds', 'durations').observe(0.3);
  const srv = await serveMetrics(m, '127.0.0.1:0');
  try {
    assert.match(srv.url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const r = await get(srv.url);
    assert.equal(r.status, 200);
    assert.match(r.type, /text\/plain/);
    assert.match(r.body, /^drover_test_things_total\{kind="a"\} 2$/m);
    assert.match(r.body, /^drover_test_level 42$/m);
    assert.match(r.body, /^drover_test_seconds_bucket\{le="0\.5"\} 1$/m);
    assert.match(r.body, /^drover_test_seconds_count 1$/m);
    assert.match(r.body, /^nodejs_eventloop_lag_seconds /m);
    assert.equal(calls, 1);
    assert.equal((await get(srv.url.replace('/metrics', '/x'))).status, 404);
    assert.equal((await get(srv.url, 'POST')).status, 405);
  } finally {
    await srv.close();
  }
});

test('a bad or busy address is a typed error', async () => {
  for (const bad of ['9464', 'host:', ':x', 'a:99999', ''])
    assert.throws(
      () => parseListenAddress(bad),
      (e: unknown) => isDroverError(e, 'INVALID_ARGUMENT'),
    );
  assert.deepEqual(parseListenAddress('[::1]:9464'), { host: '::1', port: 9464 });
  const a = await serveMetrics(new Metrics({ defaultMetrics: false }), '127.0.0.1:0');
  try {
    await assert.rejects(
      serveMetrics(new Metrics({ defaultMetrics: false }), `127.0.0.1:${a.port}`),
      (e: unknown) => isDroverError(e, 'FAILED_PRECONDITION'),
    );
  } finally {
    await a.close();
  }
});
