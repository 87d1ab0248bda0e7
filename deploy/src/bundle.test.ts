/** The agent bundle is self-contained: unpacked far from the repository, the agent loads. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildBundle, BundlePaths, readBundle, type Bundle } from './bundle.js';

const run = promisify(execFile);
let dir: string;
let bundle: Bundle;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'drover-bundle-'));
  bundle = await buildBundle({ outDir: join(dir, 'out') });
});

after(() => rmSync(dir, { recursive: true, force: true }));

test('the bundle unpacks into a tree the agent loads from, with nothing from the repository', async () => {
  const x = join(dir, 'x');
  mkdirSync(x);
  await run('tar', ['-xzf', bundle.path, '-C', x]);
  for (const p of Object.values(BundlePaths)) assert.ok(existsSync(join(x, p)), `${p} is missing`);
  assert.ok(statSync(join(x, BundlePaths.service)).mode & 0o100, 'the helper is executable');
  // No tests, no types, and koffi only for Linux.
  const drover = join(x, 'node_modules', '@drover');
  assert.deepEqual(readdirSync(drover).sort(), [
    'bus',
    'cgroup',
    'common',
    'crit',
    'criu',
    'metrics',
    'native',
    'protocol',
    'transfer',
  ]);
  // The controller daemon loads from the bundle too (its imports resolve at load: --help).
  const ctl = await run(process.execPath, [join(x, 'controller', 'dist', 'main.js'), '--help'], {
    cwd: tmpdir(),
    env: { PATH: process.env.PATH ?? '' },
  });
  assert.match(ctl.stdout, /^Usage: drover-controller/);
  assert.equal(existsSync(join(x, 'controller', 'dist', 'cli')), false, 'no CLI on hosts');
  const { stdout: found } = await run('find', [x, '-name', '*.test.js', '-o', '-name', '*.d.ts']);
  assert.equal(found.trim(), '');
  const builds = readdirSync(join(x, 'node_modules', 'koffi', 'build', 'koffi'));
  assert.ok(builds.length > 0 && builds.every((b) => /^(linux|musl)_/.test(b)), builds.join());
  // Every module of the agent resolves inside the bundle (cwd and NODE_PATH far from the repo).
  const { stdout } = await run(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const m = await import(${JSON.stringify(join(x, 'agent', 'dist', 'mod.js'))}); ` +
        `const n = await import(${JSON.stringify(join(x, 'node_modules', '@drover', 'native', 'dist', 'mod.js'))}); ` +
        `console.log(Object.keys(m).length > 0 && Object.keys(n).length > 0 ? 'loaded' : 'empty')`,
    ],
    { cwd: x, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } },
  );
  assert.equal(stdout.trim(), 'loaded');
});

test('the release id is a hash of the files and the label: same build, same id; new label, new id', async () => {
  assert.match(bundle.manifest.id, /^[0-9a-f]{16}$/);
  assert.equal(bundle.manifest.release, bundle.manifest.agentVersion);
  const again = await buildBundle({ outDir: join(dir, 'out') });
  assert.equal(again.manifest.id, bundle.manifest.id);
  assert.equal(again.path, bundle.path, 'the tarball of a release is reused');
  const v2 = await buildBundle({ outDir: join(dir, 'out'), release: 'v2' });
  assert.notEqual(v2.manifest.id, bundle.manifest.id);
  assert.equal(v2.manifest.release, 'v2');
  const read = await readBundle(v2.path);
  assert.deepEqual(read.manifest, v2.manifest);
  assert.equal(read.sha256, v2.sha256);
  await assert.rejects(
    buildBundle({ outDir: join(dir, 'out'), release: '../x' }),
    /unsafe release/,
  );
  await assert.rejects(readBundle(join(dir, 'nope.tar.gz')), /not a Drover agent bundle/);
});
