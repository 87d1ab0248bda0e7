/** Unit tests of scratch directories: made on tmpfs, removed whole, small files inline. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeScratch, removeScratch } from './scratch.js';

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
