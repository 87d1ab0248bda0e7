/** Unit tests of scratch directories: their own tmpfs, made on it, removed whole, small files inline. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCommand, type Ran } from '@drover/native';
import { parseMountinfo } from '../job-mounts.js';
import { makeScratch, mountScratch, removeScratch } from './scratch.js';

/** A scratch with small images, a subdirectory and a file of pages (≥ 1 MiB). */
async function filled(hostId: string, migrationId: string, fallback: string): Promise<string> {
  const { dir } = await makeScratch(hostId, migrationId, 'images', fallback);
  for (let i = 0; i < 10; i++) writeFileSync(join(dir, `core-${i}.img`), Buffer.alloc(300));
  mkdirSync(join(dir, 'sub'));
  writeFileSync(join(dir, 'sub', 'x.img'), 'x');
  writeFileSync(join(dir, 'pages-1.img'), Buffer.alloc(2 * 1024 * 1024));
  return dir;
}

test('inline: the small files are gone before the first await, the rest once awaited', async () => {
  const fallback = mkdtempSync(join(tmpdir(), 'scratch-test-'));
  const hostId = `scratch-test-${process.pid}`;
  try {
    const dir = await filled(hostId, 'mig-1', fallback);
    const removing = removeScratch(hostId, 'mig-1', fallback, { inline: true });
    // Synchronously, before the promise could run anything on libuv's pool.
    assert.equal(existsSync(join(dir, 'core-0.img')), false);
    assert.equal(existsSync(join(dir, 'sub')), false);
    assert.equal(existsSync(join(dir, 'pages-1.img')), true, 'a file of pages is freed off-loop');
    await removing;
    assert.equal(existsSync(join(dir, '..')), false, "the migration's directory is gone");
  } finally {
    rmSync(fallback, { recursive: true, force: true });
  }
});

test('without inline, everything goes asynchronously, and all of it', async () => {
  const fallback = mkdtempSync(join(tmpdir(), 'scratch-test-'));
  const hostId = `scratch-test-${process.pid}`;
  try {
    const dir = await filled(hostId, 'mig-2', fallback);
    const removing = removeScratch(hostId, 'mig-2', fallback);
    assert.equal(existsSync(join(dir, 'core-0.img')), true);
    await removing;
    assert.equal(existsSync(join(dir, '..')), false);
  } finally {
    rmSync(fallback, { recursive: true, force: true });
  }
});

/** A tmpfs of the test's own at a new directory; `fn` gets its path; unmounted after. */
async function withTmpfs(fn: (root: string) => Promise<void>): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'scratch-mount-test-'));
  const mounted: string[] = [];
  try {
    const r = await runCommand('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'scratch-test', root]);
    assert.equal(r.code, 0, r.stderr);
    mounted.push(root);
    await fn(root);
  } finally {
    // The scratch's own mount first, if the test made one.
    for (const m of [join(root, 'drover'), ...mounted]) {
      if (mountOf(m)) await runCommand('umount', [m]);
    }
    rmSync(root, { recursive: true, force: true });
  }
}

function mountOf(path: string): { fstype: string; superOptions: string } | undefined {
  return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).find(
    (m) => m.mountpoint === path,
  );
}

const asRoot = { skip: process.getuid?.() !== 0 ? 'mounting needs root' : false };

test(
  'mountScratch gives the scratch a root-only tmpfs with large folios, once',
  asRoot,
  async () => {
    await withTmpfs(async (root) => {
      const first = await mountScratch(runCommand, '/proc/self/mountinfo', [root]);
      assert.equal(first.state, 'mounted', JSON.stringify(first));
      const m = mountOf(join(root, 'drover'));
      assert.equal(m?.fstype, 'tmpfs');
      assert.match(m!.superOptions, /(^|,)huge=within_size(,|$)/);
      assert.match(m!.superOptions, /(^|,)mode=700(,|$)/);
      // Its size is the tmpfs it sits on (64 MiB here), so a host's limit holds for it too.
      assert.match(m!.superOptions, /(^|,)size=65536k(,|$)/);
      const again = await mountScratch(runCommand, '/proc/self/mountinfo', [root]);
      assert.equal(again.state, 'present');
      const rows = parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
      assert.equal(rows.filter((r) => r.mountpoint === join(root, 'drover')).length, 1);
    });
  },
);

test("mountScratch never hides an earlier run's scratch", asRoot, async () => {
  await withTmpfs(async (root) => {
    mkdirSync(join(root, 'drover', 'h1', 'mig-1'), { recursive: true });
    const r = await mountScratch(runCommand, '/proc/self/mountinfo', [root]);
    assert.equal(r.state, 'directory');
    assert.equal(mountOf(join(root, 'drover')), undefined);
    assert.equal(existsSync(join(root, 'drover', 'h1', 'mig-1')), true);
  });
});

test(
  'a refused mount leaves a plain directory, with the reason; no tmpfs, no mount',
  asRoot,
  async () => {
    await withTmpfs(async (root) => {
      const refuse = async (): Promise<Ran> => ({
        code: 32,
        signal: null,
        stdout: '',
        stderr: 'mount: bad option\n',
        timedOut: false,
        overflowed: false,
      });
      const r = await mountScratch(refuse, '/proc/self/mountinfo', [root]);
      assert.deepEqual(r, {
        state: 'directory',
        path: join(root, 'drover'),
        reason: 'mount: mount: bad option',
      });
    });
    const disk = mkdtempSync(join(process.cwd(), '.scratch-disk-'));
    try {
      const onDisk = await mountScratch(runCommand, '/proc/self/mountinfo', [disk]);
      assert.deepEqual(onDisk, { state: 'directory', path: null, reason: 'no tmpfs' });
    } finally {
      rmSync(disk, { recursive: true, force: true });
    }
  },
);
