/** Tests of the page channel's checks that need no CRIU: completeness, and reading progress. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDroverError } from '@drover/common';
import { writeDumpStats } from '@drover/criu';
import { checkPagesArrived, dropOnePage, parseSsProgress } from './page-channel.js';

const exitedWith = (exitCode: number | null, signal: NodeJS.Signals | null = null) => ({
  exited: async () => ({ pid: 1, exitCode, signal, coreDumped: false }),
});

test('every page the dump wrote must have arrived, from a page server that ended well', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-pages-'));
  try {
    await writeDumpStats(dir, { pagesWritten: 3, shpagesWritten: 1, pagesLazy: 0, frozenMs: 1 });
    writeFileSync(join(dir, 'pages-1.img'), Buffer.alloc(3 * 4096));
    writeFileSync(join(dir, 'pages-2.img'), Buffer.alloc(4096));
    await checkPagesArrived(dir, exitedWith(0));
    await assert.rejects(checkPagesArrived(dir, exitedWith(1)), /page server ended with exit 1/);
    await assert.rejects(checkPagesArrived(dir, exitedWith(null, 'SIGKILL')), /SIGKILL/);
    await dropOnePage(dir);
    await assert.rejects(checkPagesArrived(dir, exitedWith(0)), (e: unknown) => {
      assert.ok(isDroverError(e, 'DATA_LOSS'));
      assert.match((e as Error).message, /3 of the 4 pages the dump wrote arrived/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('progress of a connection: its send queue and what the peer acknowledged', () => {
  const out = [
    'ESTAB 0      131072 10.77.1.11:44120 10.77.1.12:7200',
    '\t cubic wscale:7,7 rto:204 rtt:0.1/0.05 bytes_sent:900000 bytes_acked:768001 segs_out:12',
    'ESTAB 0      0      10.77.1.11:44122 10.77.1.12:7200',
    '\t cubic rto:204 bytes_acked:5',
    // With a state filter, ss leaves the State column out.
    '0      4096   10.77.1.11:44124 10.77.1.12:7200',
    '\t bbr bytes_sent:9 bytes_acked:1',
  ].join('\n');
  assert.deepEqual(parseSsProgress(out), [
    { sendQ: 131072, bytesAcked: 768001 },
    { sendQ: 0, bytesAcked: 5 },
    { sendQ: 4096, bytesAcked: 1 },
  ]);
});
