import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MigrationProgressEvent } from '@drover/protocol';
import {
  bar,
  duration,
  etaSeconds,
  MigrationProgress,
  renderBar,
  renderLine,
  TransferRate,
} from './progress.js';

const MiB = 1024 * 1024;

test('TransferRate: bytes per second over the window, reset by a new transfer', () => {
  const r = new TransferRate(3000);
  assert.equal(r.rate(), null);
  r.add(0, 0);
  assert.equal(r.rate(), null);
  r.add(400, 1 * MiB);
  assert.equal(r.rate(), null, 'a rate over less than half a second is noise');
  r.add(1000, 10 * MiB);
  assert.equal(r.rate(), 10 * MiB);
  // A slower second: the window (3 s) still holds the fast start.
  r.add(2000, 12 * MiB);
  assert.equal(r.rate(), 6 * MiB);
  // Later, only the last 3 s count: (20 - 12) MiB over 3 s... from the sample at 2000.
  r.add(5000, 20 * MiB);
  r.add(6000, 22 * MiB);
  assert.equal(r.rate(), ((22 - 12) * MiB * 1000) / 4000);
  // Bytes going backwards: another transfer started.
  r.add(7000, 1 * MiB);
  assert.equal(r.rate(), null);
});

test('etaSeconds and duration', () => {
  assert.equal(etaSeconds(10 * MiB, 5 * MiB), 2);
  assert.equal(etaSeconds(10 * MiB, null), null);
  assert.equal(etaSeconds(10 * MiB, 0), null);
  assert.equal(etaSeconds(0, null), 0);
  assert.deepEqual([0.2, 1, 12.4, 59.6, 65, 3599, 3600 + 4 * 60 + 7].map(duration), [
    '<1s',
    '1s',
    '12s',
    '1m00s',
    '1m05s',
    '59m59s',
    '1h04m',
  ]);
});

test('bar, renderBar and renderLine', () => {
  assert.equal(bar(0.5, 8), '████░░░░');
  assert.equal(bar(2, 4), '████');
  assert.equal(bar(-1, 4), '░░░░');
  const half = { bytes: 32 * MiB, totalBytes: 64 * MiB, rate: 16 * MiB };
  assert.equal(renderBar(half, 8), '[████░░░░]  50%  32.0 MiB / 64.0 MiB  16.0 MiB/s  ETA 2s');
  assert.equal(renderLine(half), 'sent 32.0 MiB of 64.0 MiB (50%), 16.0 MiB/s, ETA 2s');
  assert.equal(renderLine({ ...half, rate: null }), 'sent 32.0 MiB of 64.0 MiB (50%)');
  assert.equal(renderBar({ ...half, rate: null }, 4), '[██░░]  50%  32.0 MiB / 64.0 MiB');
  // All sent: no ETA.
  assert.equal(
    renderLine({ ...half, bytes: 64 * MiB }),
    'sent 64.0 MiB of 64.0 MiB (100%), 16.0 MiB/s',
  );
});

/** A migration's events for job-a, 64 MiB at 16 MiB/s, with a fake clock. */
function run(tty: boolean): string[] {
  const out: string[] = [];
  let now = 0;
  const p = new MigrationProgress('job-a', {
    tty,
    write: (t) => out.push(t),
    now: () => now,
  });
  const base = { migrationId: 'mig-1', jobId: 'job-a', destination: 'h2' };
  const at = (ms: number, e: Record<string, unknown>): void => {
    now = ms;
    p.onEvent({ ...base, phase: 'transferring', ...e } as MigrationProgressEvent);
  };
  at(0, { phase: 'prepared' });
  at(100, { phase: 'dumped', dumpMs: 90, totalBytes: 64 * MiB });
  for (let ms = 200; ms <= 4200; ms += 200) {
    at(ms, { bytes: ((ms - 200) / 1000) * 16 * MiB, totalBytes: 64 * MiB });
  }
  // Another job's events are not ours.
  at(4300, { jobId: 'job-b', phase: 'done' });
  at(4500, { phase: 'done', stats: { frozenMs: 4400 } });
  p.finish();
  return out;
}

test('plain mode: each phase once, the transfer once a second, the end of it, the outcome', () => {
  const lines = run(false);
  assert.deepEqual(lines, [
    'job-a: freezing and dumping (to h2)\n',
    'job-a: dumped in 90 ms; 64.0 MiB to send\n',
    'job-a: sent 0 B of 64.0 MiB (0%)\n',
    'job-a: sent 16.0 MiB of 64.0 MiB (25%), 16.0 MiB/s, ETA 3s\n',
    'job-a: sent 32.0 MiB of 64.0 MiB (50%), 16.0 MiB/s, ETA 2s\n',
    'job-a: sent 48.0 MiB of 64.0 MiB (75%), 16.0 MiB/s, ETA 1s\n',
    'job-a: sent 64.0 MiB of 64.0 MiB (100%), 16.0 MiB/s; h2 restores\n',
    'job-a: moved to h2; frozen 4400 ms\n',
  ]);
});

test('terminal mode: one line redrawn in place at most every 100 ms, ended by one newline', () => {
  const out = run(true);
  assert.ok(out.slice(0, -1).every((t) => t.startsWith('\r\x1b[2Kjob-a → h2  ')));
  assert.equal(out.at(-1), '\n');
  assert.equal(out.filter((t) => t === '\n').length, 1);
  // Every event 200 ms apart gets its redraw: 2 phases, 21 transfer steps, done.
  assert.equal(out.length, 2 + 21 + 1 + 1);
  assert.equal(
    out[12],
    '\r\x1b[2Kjob-a → h2  [████████████░░░░░░░░░░░░]  50%  32.0 MiB / 64.0 MiB  16.0 MiB/s  ETA 2s',
  );
  assert.match(out.at(-2)!, /moved to h2; frozen 4400 ms$/);
});

test('stop-copy: the pages show as they go while CRIU dumps, then the small rest is sent', () => {
  const out: string[] = [];
  let now = 0;
  const p = new MigrationProgress('job-a', {
    tty: false,
    write: (t) => out.push(t),
    now: () => now,
  });
  const at = (ms: number, e: Partial<MigrationProgressEvent>): void => {
    now = ms;
    p.onEvent({ migrationId: 'mig-1', jobId: 'job-a', destination: 'h2', phase: 'dumping', ...e });
  };
  at(0, { phase: 'prepared' });
  for (let s = 1; s <= 3; s++) at(s * 1000, { bytes: s * 16 * MiB, totalBytes: 64 * MiB });
  at(3500, { phase: 'dumped', dumpMs: 3400, pageBytes: 56 * MiB, totalBytes: MiB });
  at(3600, { phase: 'transferring', bytes: MiB, totalBytes: MiB });
  at(3900, {
    phase: 'done',
    stats: { frozenMs: 3800 } as NonNullable<MigrationProgressEvent['stats']>,
  });
  assert.deepEqual(out, [
    'job-a: freezing and dumping (to h2)\n',
    'job-a: dumping: sent 16.0 MiB of 64.0 MiB (25%)\n',
    'job-a: dumping: sent 32.0 MiB of 64.0 MiB (50%), 16.0 MiB/s, ETA 2s\n',
    'job-a: dumping: sent 48.0 MiB of 64.0 MiB (75%), 16.0 MiB/s, ETA 1s\n',
    'job-a: dumped in 3400 ms; 56.0 MiB of pages sent; 1.0 MiB to send\n',
    'job-a: sent 1.0 MiB of 1.0 MiB (100%); h2 restores\n',
    'job-a: moved to h2; frozen 3800 ms\n',
  ]);
});
