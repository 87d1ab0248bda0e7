/** Unit tests of ProgressMeter: reports throttled per file, always at the last one. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProgressMeter, type TransferProgress } from './progress.js';

test('files completing within the interval report once, at the last file', () => {
  const reports: TransferProgress[] = [];
  const meter = new ProgressMeter((p) => reports.push(p), 1e9);
  for (let i = 0; i < 44; i++) {
    meter.addBytes(100);
    meter.fileDone();
  }
  assert.equal(reports.length, 0, 'no event per file');
  meter.addBytes(100);
  meter.fileDone(true);
  assert.equal(reports.length, 1);
  assert.equal(reports[0]?.files, 45);
  assert.equal(reports[0]?.bytes, 4500);
});

test('once the interval has passed, a completed file reports', () => {
  const reports: TransferProgress[] = [];
  const meter = new ProgressMeter((p) => reports.push(p), 0);
  meter.fileDone();
  meter.fileDone();
  assert.equal(reports.length, 2);
  meter.reportNow();
  assert.equal(reports.length, 3);
});
