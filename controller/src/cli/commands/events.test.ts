/** Unit tests of `drover events`' rows (events.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventRow } from './events.js';

const tick = (phase: string, folded?: number) => ({
  seq: 9,
  subject: 'drover.events.h1.migration',
  time: '2026-12-07T18:00:00.000Z',
  value: { migrationId: 'mig-1', phase, bytes: 3 * 1048576, totalBytes: 64 * 1048576 },
  ...(folded ? { folded } : {}),
});

test("a move's progress ticks show their bytes, dumping or transferring, and how many a row folds", () => {
  for (const phase of ['dumping', 'transferring']) {
    const [seq, , host, kind, what] = eventRow(tick(phase, 4));
    assert.deepEqual([seq, host, kind], ['9', 'h1', 'migration']);
    assert.match(
      what!,
      new RegExp(`^${phase} 3(\\.0)? MiB of 64(\\.0)? MiB \\(4 progress updates\\) mig-1$`),
    );
  }
  assert.equal(eventRow(tick('committing'))[4], 'committing mig-1');
});
