import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { archiveDir } from './job-dir-tar.js';

function scratch(t: { after(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'job-dir-tar-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

test('archiveDir: GNU tar extracts what it wrote, whole', async (t) => {
  const root = scratch(t);
  const src = join(root, 'src');
  mkdirSync(join(src, 'logs', 'deep'), { recursive: true });
  writeFileSync(join(src, 'empty'), '');
  writeFileSync(join(src, 'logs', 'out.log'), 'x'.repeat(70_000));
  const big = Buffer.alloc(600_000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
  writeFileSync(join(src, 'logs', 'deep', 'data.bin'), big);
  chmodSync(join(src, 'logs', 'deep', 'data.bin'), 0o640);
  utimesSync(join(src, 'empty'), 1_700_000_000, 1_700_000_000);
  linkSync(join(src, 'logs', 'out.log'), join(src, 'link_remap.1'));
  symlinkSync('/etc/shadow', join(src, 'planted'));
  const long = 'd'.repeat(90);
  mkdirSync(join(src, long, long), { recursive: true });
  writeFileSync(join(src, long, long, 'f'.repeat(120)), 'long name');
  symlinkSync('t'.repeat(150), join(src, 'longlink'));
  writeFileSync(join(src, 'record.json'), '{}');
  writeFileSync(join(src, '.sock-1'), '');

  const archive = join(root, 'a.tar');
  const skip = (n: string): boolean => n === 'record.json' || n.startsWith('.sock-');
  assert.equal(await archiveDir(src, archive, skip), true);
  assert.equal(readFileSync(archive).length % 10240, 0, 'padded to whole records');
  const out = join(root, 'out');
  mkdirSync(out);
  execFileSync('tar', ['--extract', '--file', archive, '--directory', out, '--numeric-owner']);
  assert.equal(readFileSync(join(out, 'logs', 'out.log'), 'utf8'), 'x'.repeat(70_000));
  assert.deepEqual(readFileSync(join(out, 'logs', 'deep', 'data.bin')), big);
  assert.equal(lstatSync(join(out, 'logs', 'deep', 'data.bin')).mode & 0o777, 0o640);
  assert.equal(readFileSync(join(out, 'empty'), 'utf8'), '');
  assert.equal(lstatSync(join(out, 'empty')).mtimeMs, 1_700_000_000_000);
  assert.equal(
    lstatSync(join(out, 'link_remap.1')).ino,
    lstatSync(join(out, 'logs', 'out.log')).ino,
    'a hard link stays one file',
  );
  assert.equal(readlinkSync(join(out, 'planted')), '/etc/shadow', 'a symlink is not followed');
  assert.equal(readFileSync(join(out, long, long, 'f'.repeat(120)), 'utf8'), 'long name');
  assert.equal(readlinkSync(join(out, 'longlink')), 't'.repeat(150));
  assert.equal(existsSync(join(out, 'record.json')), false, 'excluded');
  assert.equal(existsSync(join(out, '.sock-1')), false, 'excluded by prefix');
  // GNU tar lists what it would for the same directory (names only; its own lists the same).
  const listed = execFileSync('tar', ['--list', '--file', archive], { encoding: 'utf8' });
  assert.match(listed, /^\.\/\n/);
  assert.match(listed, /\n\.\/logs\/deep\/data\.bin\n/);
});

test('archiveDir: a FIFO is left to tar (false, nothing written)', async (t) => {
  const root = scratch(t);
  const src = join(root, 'src');
  mkdirSync(src);
  writeFileSync(join(src, 'a'), 'a');
  execFileSync('mkfifo', [join(src, 'pipe')]);
  const archive = join(root, 'a.tar');
  assert.equal(await archiveDir(src, archive), false);
  assert.equal(existsSync(archive), false);
});

test('archiveDir: a file with holes is left to tar, which keeps them (false, nothing written)', async (t) => {
  const root = scratch(t);
  const src = join(root, 'src');
  mkdirSync(src);
  writeFileSync(join(src, 'a'), 'a');
  // 1 GiB apparent, a few KiB on disk.
  execFileSync('truncate', ['-s', '1G', join(src, 'sparse')]);
  const archive = join(root, 'a.tar');
  assert.equal(await archiveDir(src, archive), false);
  assert.equal(existsSync(archive), false);
});
