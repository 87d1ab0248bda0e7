/** The size of a job directory, as preflight counts it. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { linkSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jobDirBytes } from './job-image.js';

test('jobDirBytes counts what du -sb counts: apparent sizes, directories, a hard link once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-jobdir-'));
  try {
    writeFileSync(join(dir, 'stdout'), 'x'.repeat(12_345));
    mkdirSync(join(dir, 'data', 'deep'), { recursive: true });
    writeFileSync(join(dir, 'data', 'deep', 'a'), Buffer.alloc(70_000));
    linkSync(join(dir, 'data', 'deep', 'a'), join(dir, 'data', 'a-again'));
    symlinkSync('/etc/passwd', join(dir, 'link'));
    writeFileSync(join(dir, 'empty'), '');
    const du = Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split(/\s+/)[0]);
    assert.equal(await jobDirBytes(dir), du);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('jobDirBytes of a directory that is not there is 0', async () => {
  assert.equal(await jobDirBytes(join(tmpdir(), 'drover-no-such-dir-ever')), 0);
});
