/** The history as operators read it: newest last, counting back from now, progress folded. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { EventLog, LoggedEvent, ReadOptions } from '@drover/bus';
import { readHistory } from './event-history.js';

/** An event log in memory with the EventLog read contract. */
function memoryLog(events: { subject: string; value: unknown }[]): EventLog & { reads: number } {
  const stored: LoggedEvent[] = events.map((e, i) => ({
    seq: i + 1,
    subject: e.subject,
    time: new Date(1_700_000_000_000 + i * 200),
    value: e.value,
  }));
  const log = {
    reads: 0,
    async lastSeq() {
      return stored.length;
    },
    async read(o: ReadOptions) {
      log.reads++;
      const re = o.subjectFilter
        ? new RegExp(
            `^${o.subjectFilter.replace(/\./g, '\\.').replace('>', '.+').replace(/\*/g, '[^.]+')}$`,
          )
        : /.*/;
      return stored
        .filter((e) => e.seq > (o.sinceSeq ?? 0) && re.test(e.subject))
        .slice(0, o.limit);
    },
  };
  return log as unknown as EventLog & { reads: number };
}

/** A session like the issue's: a migration's phases with many transferring ticks between. */
function session(): { subject: string; value: unknown }[] {
  const ev: { subject: string; value: unknown }[] = [
    { subject: 'drover.evt.h1.job', value: { jobId: 'j1', state: 'running' } },
    {
      subject: 'drover.evt.h1.migration',
      value: { migrationId: 'm1', jobId: 'j1', phase: 'prepared' },
    },
    {
      subject: 'drover.evt.h1.migration',
      value: { migrationId: 'm1', jobId: 'j1', phase: 'dumped' },
    },
  ];
  for (let i = 1; i <= 40; i++) {
    ev.push({
      subject: 'drover.evt.h1.migration',
      value: {
        migrationId: 'm1',
        jobId: 'j1',
        phase: 'transferring',
        bytes: i * 100,
        totalBytes: 4000,
      },
    });
    // A second migration's ticks interleave (a drain moving two jobs at once).
    if (i % 4 === 0)
      ev.push({
        subject: 'drover.evt.h1.migration',
        value: { migrationId: 'm2', jobId: 'j2', phase: 'transferring', bytes: i, totalBytes: 40 },
      });
  }
  ev.push(
    {
      subject: 'drover.evt.h1.migration',
      value: { migrationId: 'm1', jobId: 'j1', phase: 'done' },
    },
    { subject: 'drover.evt.h2.job', value: { jobId: 'j1', state: 'running' } },
  );
  return ev;
}

test('folded: a run of transferring ticks is one row with the latest bytes and how many it stands for', async () => {
  const log = memoryLog(session());
  const rows = await readHistory(log, { limit: 100, fold: true });
  const phases = rows.map((r) => [
    (r.value as { migrationId?: string }).migrationId ?? '-',
    (r.value as { phase?: string; state?: string }).phase ?? (r.value as { state: string }).state,
  ]);
  assert.deepEqual(phases, [
    ['-', 'running'],
    ['m1', 'prepared'],
    ['m1', 'dumped'],
    ['m1', 'transferring'],
    ['m2', 'transferring'],
    ['m1', 'done'],
    ['-', 'running'],
  ]);
  const t1 = rows[3]!;
  assert.equal(t1.folded, 40);
  assert.equal((t1.value as { bytes: number }).bytes, 4000);
  assert.equal(t1.firstSeq, 4);
  assert.equal(rows[4]!.folded, 10);
  // Unfolded, every tick is its own row.
  assert.equal((await readHistory(log, { limit: 1000 })).length, session().length);
});

test('newest: the last N rows counting back from now, oldest of them first', async () => {
  const log = memoryLog(session());
  const last3 = await readHistory(log, { limit: 3, newest: true, fold: true });
  assert.deepEqual(
    last3.map(
      (r) =>
        (r.value as { phase?: string; state?: string }).phase ??
        (r.value as { state: string }).state,
    ),
    ['transferring', 'done', 'running'],
  );
  assert.equal(last3.at(-1)!.seq, session().length);
  // Without folding the newest three are the end of the session itself.
  const raw = await readHistory(log, { limit: 3, newest: true });
  assert.deepEqual(
    raw.map((r) => r.seq),
    [session().length - 2, session().length - 1, session().length],
  );
  // A filter that matches little: the window grows until it has enough, or the log's start.
  const h2 = await readHistory(log, { limit: 5, newest: true, subjectFilter: 'drover.evt.h2.>' });
  assert.equal(h2.length, 1);
});

test('paging on: a limit counts rows, and the next read starts after the last seq seen', async () => {
  const log = memoryLog(session());
  const page1 = await readHistory(log, { limit: 4, fold: true });
  assert.equal(page1.length, 4);
  const since = Math.max(...page1.map((r) => r.seq));
  const page2 = await readHistory(log, { limit: 100, fold: true, sinceSeq: since });
  assert.ok(page2.every((r) => r.seq > since));
  assert.equal((page2.at(-1)!.value as { state: string }).state, 'running');
});
