import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileInventory } from './inventory.js';
import { judgeFacts, parseFacts } from './remote.js';

const FP = 'SHA256:SGYGLXhyo96W1vUlWY9xI5KnOtEUTsjMUeKAv/8lFhc';
const inv = compileInventory(
  {
    nats: { servers: ['nats://n:4222'] },
    hosts: [
      { name: 'a', address: '10.0.0.1', hostKey: FP },
      { name: 'b', address: '10.0.0.2', hostKey: FP, setup: 'none' },
    ],
  },
  '/x/inv.yaml',
);
const [a, b] = inv.hosts;

const GOOD = [
  'uid=0',
  'kernel=6.18.4',
  'arch=x86_64',
  'os=Debian GNU/Linux 12 (bookworm)',
  'cr=yes',
  'kconfig=y',
  'node=/usr/bin/node',
  'node_version=v20.19.1',
  'criu=/usr/local/sbin/criu',
  'criu_version=4.2.1',
  'criu_check=ok',
  'apt=yes',
  'systemd=no',
  'freezer=v2',
  'pipe_max=4194304',
  'job_bridge=yes',
].join('\n');

test('facts: a good host has no problems and no warnings', () => {
  const f = parseFacts(GOOD);
  assert.equal(f.os, 'Debian GNU/Linux 12 (bookworm)');
  assert.equal(f.criuCheck, 'ok');
  assert.deepEqual(judgeFacts(f, a!), { problems: [], warnings: [], criuReady: true });
});

test('facts: each missing requirement is named; CRIU that setup can provide is only a warning', () => {
  const f = parseFacts(
    GOOD.replace('uid=0', 'uid=1000')
      .replace('cr=yes', 'cr=no')
      .replace('node_version=v20.19.1', 'node_version=v20.18.3')
      .replace('criu_version=4.2.1', 'criu_version=3.17.1')
      .replace('freezer=v2', 'freezer=none')
      .replace('pipe_max=4194304', 'pipe_max=1048576')
      .replace('job_bridge=yes', 'job_bridge=no'),
  );
  const v = judgeFacts(f, a!);
  assert.equal(v.problems.length, 4, v.problems.join('\n'));
  assert.match(v.problems.join('\n'), /uid 1000/);
  assert.match(v.problems.join('\n'), /lacks CONFIG_CHECKPOINT_RESTORE/);
  assert.match(v.problems.join('\n'), /node v20\.18\.3 .* older than 20\.19/);
  assert.match(v.problems.join('\n'), /no cgroup freezer/);
  assert.match(v.warnings.join('\n'), /CRIU 3\.17\.1 .*setup will install or build CRIU >= 4\.2/);
  assert.match(v.warnings.join('\n'), /pipe-max-size/);
  assert.match(v.warnings.join('\n'), /no job bridge drover0/);
  assert.equal(v.criuReady, false);
  // With setup off (or no apt), an unusable CRIU is a problem.
  assert.match(judgeFacts(f, b!).problems.join('\n'), /need CRIU >= 4\.2/);
  const noNode = parseFacts(GOOD.replace(/^node.*$/gm, ''));
  assert.match(judgeFacts(noNode, a!).problems.join('\n'), /no node on the host/);
});
