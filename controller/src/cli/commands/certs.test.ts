/** Tests of `drover certs init --hosts`: names alone, or with the addresses their certificates name. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentHosts } from './certs.js';

test('--hosts takes names, NAME=ADDRESS, and a name again for another address', () => {
  assert.deepEqual(agentHosts('h1,h2'), { agents: ['h1', 'h2'], addresses: {} });
  assert.deepEqual(agentHosts('h1=10.0.0.1, h2=10.0.0.2,h1=h1.example,h3'), {
    agents: ['h1', 'h2', 'h3'],
    addresses: { h1: ['10.0.0.1', 'h1.example'], h2: ['10.0.0.2'] },
  });
  assert.deepEqual(agentHosts(''), { agents: [], addresses: {} });
  for (const bad of ['h1=', '=10.0.0.1']) {
    assert.throws(
      () => agentHosts(bad),
      (err: Error & { usage?: boolean }) => err.usage === true && /NAME=ADDRESS/.test(err.message),
    );
  }
});
