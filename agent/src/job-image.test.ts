/** What a job's image plan decides: the size of its directory, CRIU's network lock. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  linkSync,
  mkdirSync,
  mkdtempSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processTree } from '@drover/native';
import { JobKind } from '@drover/protocol';
import { jobDirBytes, planJobDump } from './job-image.js';
import { blankRecord, type JobRecord } from './job-store.js';

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

test("a dump skips CRIU's network lock only for a tree in the host's network that dumps no connection", async () => {
  const job = (rootPid: number, tcpEstablished?: boolean): JobRecord => ({
    ...blankRecord('job-1', 'h1', '/nonexistent'),
    kind: JobKind.adopted,
    rootPid,
    ...(tcpEstablished ? { checkpointOptions: { tcpEstablished } } : {}),
  });
  // This process shares the agent's (its own) network namespace.
  assert.equal((await planJobDump(job(process.pid))).networkLock, 'skip');
  assert.equal((await planJobDump(job(process.pid, true))).networkLock, 'nftables');
  // A tree in a network namespace of its own is locked inside it.
  const other = spawn('unshare', ['--net', 'sleep', '30'], { stdio: 'ignore' });
  try {
    let pid = 0;
    for (let i = 0; i < 100 && pid === 0; i++) {
      const kids = processTree(other.pid!).filter((p) => p.pid !== other.pid);
      pid =
        kids[0]?.pid ?? (readlinkSync(`/proc/${other.pid}/exe`).endsWith('sleep') ? other.pid! : 0);
      if (pid === 0) await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(pid > 0, 'the namespaced process started');
    assert.equal((await planJobDump(job(pid))).networkLock, 'nftables');
  } finally {
    other.kill('SIGKILL');
  }
});
