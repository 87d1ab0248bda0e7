/** Files in a job's directory are never read or written through a planted symlink. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDroverError } from '@drover/common';
import { readNoFollow, touchNoFollow, writeAtomicNoFollow } from './job-dir-fs.js';

const refused = (err: unknown): boolean => isDroverError(err) && err.code === 'FAILED_PRECONDITION';

test('symlinks in a job directory are never followed, for reads or writes', async () => {
  const base = mkdtempSync(join(tmpdir(), 'drover-jobdir-'));
  try {
    const secret = join(base, 'secret');
    writeFileSync(secret, 'secret\n');
    const dir = join(base, 'job');
    mkdirSync(dir);
    writeFileSync(join(dir, 'log'), 'abcdef');
    assert.equal(
      (await readNoFollow(join(dir, 'log'), { maxBytes: 3, tail: true })).data.toString(),
      'def',
    );
    symlinkSync(secret, join(dir, 'stdout.log'));
    await assert.rejects(readNoFollow(join(dir, 'stdout.log'), { maxBytes: 100 }), refused);
    await assert.rejects(touchNoFollow(join(dir, 'stdout.log')), refused);
    // The link itself is replaced; its target is untouched.
    await writeAtomicNoFollow(join(dir, 'stdout.log'), 'record');
    assert.equal(readFileSync(join(dir, 'stdout.log'), 'utf8'), 'record');
    assert.equal(readFileSync(secret, 'utf8'), 'secret\n');
    // A directory replaced by a symlink is refused too.
    symlinkSync(base, join(dir, 'sub'));
    await assert.rejects(readNoFollow(join(dir, 'sub', 'secret'), { maxBytes: 100 }), refused);
    await assert.rejects(writeAtomicNoFollow(join(dir, 'sub', 'secret'), 'x'), refused);
    assert.equal(readFileSync(secret, 'utf8'), 'secret\n');
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});
