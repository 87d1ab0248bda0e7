import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MigrationRecord } from '@drover/protocol';
import { bytes, table, timeline } from './output.js';

test('table aligns columns; bytes picks a unit', () => {
  assert.equal(table(['A', 'BB'], [['xyz', '1']]), 'A    BB\nxyz  1');
  assert.deepEqual([0, 1023, 1024, 1536 * 1024, 3 * 1024 ** 3].map(bytes), [
    '0 B',
    '1023 B',
    '1.0 KiB',
    '1.5 MiB',
    '3.0 GiB',
  ]);
});

/** A post-copy move's record (its timeline replaced where a test needs another). */
const POST_COPY = {
  migrationId: 'mig-1',
  jobId: 'job-a',
  role: 'source',
  source: 'h1',
  destination: 'h2',
  mode: 'post-copy',
  state: 'done',
  startedAt: '',
  updatedAt: '',
  timeline: [
    { phase: 'preparing', atMs: 0 },
    { phase: 'prepared', atMs: 20 },
    { phase: 'frozen', atMs: 25 },
    { phase: 'dumping', atMs: 25 },
    { phase: 'transferring', atMs: 100 },
    { phase: 'awaiting', atMs: 600 },
    { phase: 'pulling-pages', atMs: 700 },
    { phase: 'committing', atMs: 2700 },
    { phase: 'done', atMs: 2720 },
  ],
  stats: {
    frozenMs: 675,
    dumpMs: 75,
    transferMs: 500,
    restoreMs: 90,
    totalMs: 2720,
    bytes: 64 * 1024 * 1024,
    files: 40,
    pages: 12,
  },
  error: null,
  note: null,
} satisfies MigrationRecord;

test('timeline: every phase with when it started, how long it took and what happened', () => {
  const m = POST_COPY;
  const lines = timeline(m).split('\n');
  assert.deepEqual(lines.map((l) => l.split(/ {2,}/).slice(0, 3)).slice(0, 10), [
    ['phase', 'at', 'took'],
    ['preparing', '0 ms', '20 ms'],
    ['prepared', '20 ms', '5 ms'],
    ['frozen', '25 ms', '0 ms'],
    ['dumping', '25 ms', '75 ms'],
    ['transferring', '100 ms', '500 ms'],
    ['awaiting', '600 ms', '100 ms'],
    ['pulling-pages', '700 ms', '2000 ms'],
    ['committing', '2700 ms', '20 ms'],
    ['done', '2720 ms'],
  ]);
  assert.match(lines[5]!, /64\.0 MiB in 40 files at 128\.0 MiB\/s$/);
  assert.match(lines[6]!, /h2 restores the job$/);
  assert.match(lines[7]!, /the job runs on h2, which pulls its memory pages$/);
  assert.equal(
    lines[10],
    'frozen (downtime) 675 ms · dump 75 ms · transfer 500 ms · restore 90 ms · total 2720 ms · ' +
      '64.0 MiB in 40 files · 12 pages · post-copy',
  );
});

test('hosts --wide: what CRIU was built with, and the features it lacks', async () => {
  const { abilitiesColumn } = await import('./commands/hosts.js');
  const host = (abilities?: { build: string[]; features: string[]; missing: string[] }) =>
    ({
      info: {
        criu: {
          version: '4.2.1',
          lazyPages: true,
          memTrack: false,
          ...(abilities ? { abilities } : {}),
        },
      },
    }) as never;
  assert.equal(abilitiesColumn(host()), 'probing');
  assert.equal(
    abilitiesColumn(
      host({ build: ['libbpf', 'gnutls'], features: ['a', 'b', 'c'], missing: ['autofs'] }),
    ),
    'libbpf,gnutls; 3/4 features (lacks autofs)',
  );
  assert.equal(
    abilitiesColumn(host({ build: [], features: ['a'], missing: [] })),
    'no optional libraries; 1/1 features',
  );
});

test("timeline: a post-copy move's steps in its frozen window say what happened", () => {
  const m = {
    ...POST_COPY,
    timeline: [
      { phase: 'prepared', atMs: 0 },
      { phase: 'stream-open', atMs: 20 },
      { phase: 'quiesced', atMs: 25 },
      { phase: 'frozen', atMs: 40 },
      { phase: 'post-dump', atMs: 200 },
      { phase: 'images-ready', atMs: 220 },
      { phase: 'transferring', atMs: 225 },
    ],
  };
  const lines = timeline(m).split('\n');
  assert.match(lines[1]!, /the stream to h2 opens$/);
  assert.match(lines[2]!, /freezing the job$/);
  assert.match(lines[3]!, /the cgroup freezer and the network lock$/);
  assert.match(lines[5]!, /the job's directory archived beside the images$/);
  assert.match(lines[6]!, /the images checked to hold no memory$/);
});
