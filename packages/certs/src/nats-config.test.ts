import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CONTROLLER_OP_ACCESS, permissionsOf, type Identity } from '@drover/protocol';
import {
  checkIdentities,
  natsClusterConfig,
  natsRouteUser,
  natsSecurityConfig,
} from './nats-config.js';

const tls = { caFile: '/c/ca.crt', certFile: '/c/server/nats.crt', keyFile: '/c/server/nats.key' };
const ids: Identity[] = [
  { role: 'viewer', name: 'bob' },
  { role: 'agent', name: 'h2' },
  { role: 'controller', name: 'controller' },
  { role: 'agent', name: 'h1' },
  { role: 'operator', name: 'alice' },
];

/** The allow lists of `user` in a generated config, parsed back out of its text. */
function userSection(text: string, user: string): string {
  const start = text.indexOf(`user: "${user}"`);
  assert.ok(start >= 0, `no user ${user}`);
  return text.slice(start, text.indexOf('\n    }', start));
}

describe('natsSecurityConfig', () => {
  it('requires TLS, verifies and maps certificates, lists every identity once', () => {
    const text = natsSecurityConfig({ tls, identities: ids });
    assert.match(text, /tls \{[^}]*ca_file: "\/c\/ca.crt"[^}]*verify_and_map: true/s);
    for (const u of [
      'CN=controller,OU=controller,O=drover',
      'CN=h1,OU=agent,O=drover',
      'CN=h2,OU=agent,O=drover',
      'CN=alice,OU=operator,O=drover',
      'CN=bob,OU=viewer,O=drover',
    ]) {
      assert.equal(text.split(`user: "${u}"`).length, 2, u);
    }
    // Deterministic: order of input does not matter.
    assert.equal(text, natsSecurityConfig({ tls, identities: [...ids].reverse() }));
  });

  it('keeps an agent to its own subjects', () => {
    const h1 = userSection(natsSecurityConfig({ tls, identities: ids }), 'CN=h1,OU=agent,O=drover');
    assert.match(h1, /"drover\.hb\.h1"/);
    assert.match(h1, /"drover\.evt\.h1\.>"/);
    assert.match(h1, /"drover\.agent\.h1\.>"/);
    assert.doesNotMatch(h1, /h2/);
    assert.doesNotMatch(h1, /drover\.ctl/);
    assert.doesNotMatch(h1, /"drover\.agent\.\*\.(run|signal|checkpoint|restore|migrate|freeze)"/);
    assert.doesNotMatch(h1, /"\$JS\.API\.>"|"\$KV|"_INBOX\.>"|"drover\.agent\.>"/);
    assert.match(h1, /"_INBOX\.agent\.h1\.>"/);
    assert.match(h1, /allow_responses/);
  });

  it('gives a viewer only the read operations of the controller', () => {
    const p = permissionsOf({ role: 'viewer', name: 'bob' });
    for (const [op, access] of Object.entries(CONTROLLER_OP_ACCESS)) {
      // In its own name only: the controller learns the caller from the subject (the audit).
      assert.equal(p.publish.includes(`drover.ctl.${op}.viewer.bob`), access === 'read', op);
    }
    assert.ok(
      p.publish.every((s) => s.endsWith('.viewer.bob')),
      p.publish.join(' '),
    );
    for (const op of ['run', 'migrate', 'drain', 'checkpoint', 'restore', 'cordon', 'stop'])
      assert.equal(CONTROLLER_OP_ACCESS[op as keyof typeof CONTROLLER_OP_ACCESS], 'change', op);
    assert.equal(
      p.publish.some((s) => s.startsWith('drover.agent') || s.startsWith('$')),
      false,
    );
    const op = permissionsOf({ role: 'operator', name: 'alice' });
    assert.deepEqual(op.publish, ['drover.ctl.*.operator.alice']);
  });

  it('refuses dotted or duplicate names and a config without a controller', () => {
    assert.throws(() => checkIdentities([{ role: 'agent', name: 'h1.example' }]), /no dots/);
    assert.throws(
      () =>
        checkIdentities([
          { role: 'agent', name: 'h1' },
          { role: 'agent', name: 'h1' },
        ]),
      /twice/,
    );
    assert.throws(
      () => natsSecurityConfig({ tls, identities: [{ role: 'agent', name: 'h1' }] }),
      /controller/,
    );
  });
});

describe('natsClusterConfig', () => {
  it('requires TLS on routes and maps every route to the route user', () => {
    const text = natsClusterConfig({
      clusterName: 'prod',
      tls,
      listen: '10.0.0.5:6222',
      routes: ['10.0.0.6:6222', '[fd00::7]:6222'],
    });
    assert.match(text, /cluster \{\n {2}name: "prod"\n {2}listen: "10\.0\.0\.5:6222"/);
    assert.match(text, /"nats-route:\/\/10\.0\.0\.6:6222",\n\s*"nats-route:\/\/\[fd00::7\]:6222"/);
    assert.match(
      text,
      /tls \{\n\s*ca_file: "\/c\/ca.crt"\n\s*cert_file: "\/c\/server\/nats.crt"\n\s*key_file: "\/c\/server\/nats.key"\n\s*verify_and_map: true\n\s*timeout: 2\n\s*\}/,
    );
    assert.match(text, /authorization \{\n\s*user: "CN=prod,OU=nats-route,O=drover"/);
    assert.equal(natsRouteUser('prod'), 'CN=prod,OU=nats-route,O=drover');
    // No route without TLS: the block has no plain user/password or token.
    assert.doesNotMatch(text, /password|token/);
    assert.throws(
      () => natsClusterConfig({ clusterName: 'a.b', tls, listen: 'x:1', routes: [] }),
      /cluster name/,
    );
  });
});
