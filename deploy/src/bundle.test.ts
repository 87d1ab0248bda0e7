/** The agent bundle is self-contained: unpacked far from the repository, the agent starts. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  buildBundle,
  BundlePaths,
  defaultCacheDir,
  koffiTriplet,
  readBundle,
  type Bundle,
} from './bundle.js';

const run = promisify(execFile);
let dir: string;
let bundle: Bundle;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'drover-bundle-'));
  bundle = await buildBundle({ outDir: join(dir, 'out') });
});

after(() => rmSync(dir, { recursive: true, force: true }));

test('the bundle is one file per binary plus koffi, and the bundled agent starts far from the repository', async () => {
  const x = join(dir, 'x');
  mkdirSync(x);
  await run('tar', ['-xzf', bundle.path, '-C', x]);
  for (const p of Object.values(BundlePaths)) assert.ok(existsSync(join(x, p)), `${p} is missing`);
  for (const p of [BundlePaths.service, BundlePaths.agentMain, BundlePaths.selfCheckpoint])
    assert.ok(statSync(join(x, p)).mode & 0o100, `${p} is executable`);
  // No node_modules: every binary is one file; koffi's native module only for this machine.
  const { stdout: files } = await run('find', ['.', '-type', 'f'], { cwd: x });
  assert.deepEqual(files.trim().split('\n').sort(), [
    './BUNDLE.json',
    './agent/dist/crypto-worker.js',
    './agent/dist/heartbeat-worker.js',
    `./agent/dist/koffi/${koffiTriplet()}/koffi.node`,
    './agent/dist/main.js',
    './agent/dist/self-checkpoint-cli.js',
    './bin/drover-service.js',
    './controller/dist/main.js',
    './deploy/setup-host.sh',
    './package.json',
  ]);
  // The agent loads every module, koffi's native one included, and gets as far as its flags
  // (cwd and environment far from the repository); without koffi's module it cannot start.
  const agent = (): Promise<{ code: number; stderr: string }> =>
    run(process.execPath, [join(x, BundlePaths.agentMain), '--no-such-flag'], {
      cwd: x,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    );
  // The controller daemon loads from the bundle too (its imports resolve at load: --help).
  const ctl = await run(process.execPath, [join(x, 'controller', 'dist', 'main.js'), '--help'], {
    cwd: tmpdir(),
    env: { PATH: process.env.PATH ?? '' },
  });
  assert.match(ctl.stdout, /^Usage: drover-controller/);
  assert.equal(existsSync(join(x, 'controller', 'dist', 'cli')), false, 'no CLI on hosts');
  assert.deepEqual(await agent(), {
    code: 1,
    stderr: "drover-agent: Unknown option '--no-such-flag'\n",
  });
  rmSync(join(x, 'agent', 'dist', 'koffi'), { recursive: true });
  const without = await agent();
  assert.equal(without.code, 1);
  assert.doesNotMatch(without.stderr, /Unknown option/);
});

test('bundles are cached under $XDG_CACHE_HOME/drover, else ~/.cache/drover', () => {
  assert.equal(defaultCacheDir({ XDG_CACHE_HOME: '/c', HOME: '/h' }), '/c/drover');
  assert.equal(defaultCacheDir({ HOME: '/h' }), '/h/.cache/drover');
  assert.equal(defaultCacheDir({ XDG_CACHE_HOME: 'rel', HOME: '/h' }), '/h/.cache/drover');
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
