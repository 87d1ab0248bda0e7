/** Tests of CRIU's statistics image: written and read back, and damage refused. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pageBytes, readDumpStats, writeDumpStats } from './image-stats.js';

test('dump statistics round-trip; a damaged or missing image is DATA_LOSS', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-stats-'));
  try {
    await assert.rejects(
      readDumpStats(dir),
      (e: unknown) => (e as { code: string }).code === 'DATA_LOSS',
    );
    await writeDumpStats(dir, {
      pagesWritten: 17082,
      shpagesWritten: 3,
      pagesLazy: 0,
      frozenMs: 942,
    });
    assert.deepEqual(await readDumpStats(dir), {
      pagesWritten: 17082,
      shpagesWritten: 3,
      pagesLazy: 0,
      frozenMs: 942,
    });
    writeFileSync(join(dir, 'stats-dump'), Buffer.from('not a criu image at all'));
    await assert.rejects(readDumpStats(dir), /not a CRIU statistics image/);
    writeFileSync(join(dir, 'pages-1.img'), Buffer.alloc(8192));
    writeFileSync(join(dir, 'pages-2.img'), Buffer.alloc(4096));
    writeFileSync(join(dir, 'pagemap-1.img'), Buffer.alloc(100));
    assert.equal(await pageBytes(dir), 12288);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
