/** Reading a job's logs: tails by bytes and lines, since a time, and on from an offset. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDroverError } from '@drover/common';
import { lastLines, LogIndex, readJobLog } from './job-logs.js';

function jobsDir(): { base: string; jobs: string; dir: string } {
  const base = mkdtempSync(join(tmpdir(), 'drover-logs-'));
  const jobs = join(base, 'jobs');
  const dir = join(jobs, 'job-1');
  mkdirSync(dir, { recursive: true });
  return { base, jobs, dir };
}

test('the last N lines, the last N bytes, everything by default', async () => {
  const { base, dir } = jobsDir();
  try {
    writeFileSync(join(dir, 'stdout.log'), 'one\ntwo\nthree\nfour\n');
    const lines = await readJobLog(dir, 'job-1', { tailLines: 2 }, null);
    assert.equal(lines.data, 'three\nfour\n');
    assert.equal(lines.truncated, true);
    assert.equal(lines.nextByte, 19);
    assert.equal((await readJobLog(dir, 'job-1', { tailLines: 0 }, null)).data, '');
    assert.equal((await readJobLog(dir, 'job-1', { tailLines: 10 }, null)).truncated, false);
    assert.equal((await readJobLog(dir, 'job-1', { tailBytes: 5 }, null)).data, 'four\n');
    const all = await readJobLog(dir, 'job-1', {}, null);
    assert.equal(all.data, 'one\ntwo\nthree\nfour\n');
    assert.equal(all.sizeBytes, 19);
    // stderr is its own file; a missing log is empty, not an error.
    assert.equal((await readJobLog(dir, 'job-1', { stream: 'stderr' }, null)).data, '');
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('lastLines counts a final newline as the end of a line', () => {
  const b = (s: string): string => lastLines(Buffer.from(s), 2).toString();
  assert.equal(b('a\nb\nc\n'), 'b\nc\n');
  assert.equal(b('a\nb\nc'), 'b\nc');
  assert.equal(b('c\n'), 'c\n');
  assert.equal(b(''), '');
});

test('following: on from an offset, in chunks that never cut a character, restarting when the log shrank', async () => {
  const { base, dir } = jobsDir();
  try {
    const log = join(dir, 'stdout.log');
    writeFileSync(log, 'héllo\n');
    const first = await readJobLog(dir, 'job-1', { fromByte: 0 }, null);
    assert.equal(first.data, 'héllo\n');
    appendFileSync(log, 'wörld\n');
    const next = await readJobLog(dir, 'job-1', { fromByte: first.nextByte! }, null);
    assert.equal(next.data, 'wörld\n');
    assert.equal(next.nextByte, Buffer.byteLength('héllo\nwörld\n'));
    // A chunk limit that falls inside "é" (2 bytes) stops before it.
    const cut = await readJobLog(dir, 'job-1', { fromByte: 0, tailBytes: 2 }, null);
    assert.equal(cut.data, 'h');
    assert.equal(cut.truncated, true);
    const rest = await readJobLog(dir, 'job-1', { fromByte: cut.nextByte!, tailBytes: 3 }, null);
    assert.equal(rest.data, 'él');
    writeFileSync(log, 'new\n');
    const again = await readJobLog(dir, 'job-1', { fromByte: 100 }, null);
    assert.equal(again.fromByte, 0);
    assert.equal(again.data, 'new\n');
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('since a time: from the size the log had at the last sample before it', async () => {
  const { base, jobs, dir } = jobsDir();
  try {
    const log = join(dir, 'stdout.log');
    const index = new LogIndex(jobs);
    writeFileSync(log, 'old 1\nold 2\n');
    await index.sample(1000);
    appendFileSync(log, 'mid\n');
    await index.sample(2000);
    await index.sample(2500); // no change: nothing recorded
    appendFileSync(log, 'new\n');
    await index.sample(3000);
    assert.equal((await readJobLog(dir, 'job-1', { sinceMs: 2100 }, index)).data, 'new\n');
    assert.equal((await readJobLog(dir, 'job-1', { sinceMs: 1500 }, index)).data, 'mid\nnew\n');
    // Before the first sample: everything (it may be older; it is never less).
    assert.equal(
      (await readJobLog(dir, 'job-1', { sinceMs: 10 }, index)).data,
      'old 1\nold 2\nmid\nnew\n',
    );
    assert.equal((await readJobLog(dir, 'job-1', { sinceMs: 9999 }, index)).data, '');
    // Combined with a line limit.
    assert.equal(
      (await readJobLog(dir, 'job-1', { sinceMs: 1500, tailLines: 1 }, index)).data,
      'new\n',
    );
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('the index keeps recent samples whole and thins old ones', () => {
  const index = new LogIndex('/nonexistent', 8);
  for (let i = 1; i <= 20; i++) index.record('j/stdout', i * 1000, i * 10);
  assert.equal(index.offsetAt('j', 'stdout', 20_000), 200);
  assert.equal(index.offsetAt('j', 'stdout', 19_500), 190);
  assert.ok(index.offsetAt('j', 'stdout', 2500) <= 20);
});

test('a log replaced by a symlink is refused', async () => {
  const { base, dir } = jobsDir();
  try {
    writeFileSync(join(base, 'secret'), 'x');
    symlinkSync(join(base, 'secret'), join(dir, 'stdout.log'));
    await assert.rejects(readJobLog(dir, 'job-1', { fromByte: 0 }, null), (e: unknown) =>
      isDroverError(e, 'FAILED_PRECONDITION'),
    );
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});
