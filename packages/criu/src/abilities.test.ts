import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { buildLibrariesOf, probeAbilities } from './abilities.js';
import { findCriu } from './provision.js';

test('build libraries are read from ldd output', () => {
  const ldd = [
    '\tlinux-vdso.so.1 (0x00007ffd)',
    '\tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007f66)',
    '\tlibnftables.so.1 => /lib/x86_64-linux-gnu/libnftables.so.1 (0x00007f66)',
  ].join('\n');
  assert.deepEqual(buildLibrariesOf(ldd), ['libbpf', 'nftables']);
  assert.deepEqual(buildLibrariesOf(''), []);
});

test("abilities agree with criu check --feature and with the binary's libraries", async () => {
  const criu = await findCriu({ pathEnv: process.env.PATH ?? '' });
  const probed = ['timens', 'mnt_id', 'autofs', 'no-such-feature'];
  const a = await probeAbilities(criu.path, probed);
  assert.deepEqual([...a.features, ...a.missing].sort(), [...probed].sort());
  assert.ok(a.missing.includes('no-such-feature'));
  for (const f of probed) {
    let passed = true;
    try {
      execFileSync(criu.path, ['check', '--feature', f], { stdio: 'ignore' });
    } catch {
      passed = false;
    }
    assert.equal(a.features.includes(f), passed, `${f}: criu check says ${passed}`);
  }
  const ldd = execFileSync('ldd', [criu.path], { encoding: 'utf8' });
  assert.equal(a.build.includes('libbpf'), /libbpf\.so/.test(ldd));
  assert.equal(a.build.includes('gnutls'), /libgnutls\.so/.test(ldd));
});
