import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDroverError } from '@drover/common';
import { compareVersions, findCriu, parseCriuVersion } from './provision.js';
import { logTail } from './criu.js';

const dir = mkdtempSync(join(tmpdir(), 'drover-criu-provision-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A fake criu binary printing `Version: v` (the layer below, faked for a unit test). */
function fakeCriu(name: string, output: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\nprintf '%s\\n' '${output}'\n`, { mode: 0o755 });
  return path;
}

test('version parsing and comparison', () => {
  assert.equal(parseCriuVersion('Version: 4.2.1\nGitID: v4.2.1\n'), '4.2.1');
  assert.equal(parseCriuVersion('Version: 3.17\n'), '3.17');
  assert.equal(parseCriuVersion('garbage'), null);
  assert.ok(compareVersions('4.2.1', '4.2.0') > 0);
  assert.ok(compareVersions('4.2', '4.2.0') === 0);
  assert.ok(compareVersions('3.17', '4.2.0') < 0);
  assert.ok(compareVersions('4.10', '4.2') > 0);
});

test('findCriu skips old binaries and takes the first new enough one', async () => {
  const old = fakeCriu('criu-old', 'Version: 3.17');
  const good = fakeCriu('criu-good', 'Version: 4.2.1');
  const found = await findCriu({ candidates: [join(dir, 'missing'), old, good] });
  assert.deepEqual(found, { path: good, version: '4.2.1' });
});

test('findCriu explains why nothing fits', async () => {
  const old = fakeCriu('criu-41', 'Version: 4.1.1');
  await assert.rejects(findCriu({ candidates: [old] }), (err: unknown) => {
    assert.ok(isDroverError(err, 'CRIU_NOT_PROVISIONED'));
    assert.match(err.message, /4\.1\.1 < 4\.2\.0/);
    assert.match(err.message, /setup-host\.sh/);
    return true;
  });
});

test('logTail starts at the first error line', async () => {
  const log = join(dir, 'dump.log');
  const lines = Array.from({ length: 100 }, (_, i) => `(0.${i}) line ${i}`);
  lines[5] =
    "(00.0) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted";
  lines[60] = '(00.1) Error (criu/cr-restore.c:1): Can not fork for 1234: File exists';
  writeFileSync(log, lines.join('\n') + '\n');
  const tail = await logTail(log, 10);
  assert.equal(tail.length, 10);
  assert.match(tail[0]!, /Error \(/);
  assert.deepEqual(await logTail(join(dir, 'nope.log')), []);
});
