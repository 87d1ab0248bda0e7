/** Tests of the job network's address arithmetic. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  hostVethName,
  intToIpv4,
  ipv4ToInt,
  isHostAddress,
  macFor,
  parseSubnet,
} from './job-network.js';

test('IPv4 addresses round-trip through numbers', () => {
  for (const a of ['0.0.0.0', '10.78.5.2', '255.255.255.255', '192.168.1.254'])
    assert.equal(intToIpv4(ipv4ToInt(a)), a);
  assert.throws(() => ipv4ToInt('10.78.5.256'));
  assert.throws(() => ipv4ToInt('10.78.5'));
});

test('subnets: host bits zero, host addresses exclude network and broadcast', () => {
  const s = parseSubnet('10.78.4.0/22');
  assert.deepEqual(s, { base: ipv4ToInt('10.78.4.0'), prefixLength: 22, size: 1024 });
  assert.ok(isHostAddress(s, '10.78.4.1') && isHostAddress(s, '10.78.7.254'));
  assert.ok(!isHostAddress(s, '10.78.4.0') && !isHostAddress(s, '10.78.7.255'));
  assert.ok(!isHostAddress(s, '10.78.8.1'));
  assert.throws(() => parseSubnet('10.78.5.0/22'), /host bits are set/);
  assert.throws(() => parseSubnet('10.78.5.0/31'), /8\.\.30/);
});

test("a job's MAC follows from its address; its host-side link name from its id", () => {
  assert.equal(macFor('10.78.5.2'), '02:44:0a:4e:05:02');
  const name = hostVethName('job-0123456789ab');
  assert.match(name, /^dj[0-9a-f]{8}$/);
  assert.equal(hostVethName('job-0123456789ab'), name);
  assert.notEqual(hostVethName('job-0123456789ac'), name);
});
