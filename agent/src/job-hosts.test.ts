/** Tests of a job's /etc/hosts text. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderHosts } from './job-hosts.js';

test("a job's hosts file: localhost, its own names, then the cluster's named jobs", () => {
  const text = renderHosts({ id: 'job-1', name: 'web', hostname: 'job-1' }, '10.78.0.2', [
    { name: 'web', address: '10.78.0.2' },
    { name: 'db', address: '10.78.0.3' },
    { name: 'bad name!', address: '10.78.0.4' },
  ]);
  const rows = text.split('\n').filter((l) => l && !l.startsWith('#'));
  assert.deepEqual(rows, [
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    '10.78.0.2\tjob-1 web',
    '10.78.0.3\tdb',
  ]);
});
