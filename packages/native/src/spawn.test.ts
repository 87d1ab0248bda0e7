import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { closeSync, openSync, readdirSync, readlinkSync } from 'node:fs';
import { SyscallError } from './errors.js';
import { runCommand, spawnDirect } from './spawn.js';

/** This process's open descriptors, by number. */
function openFds(): number[] {
  return readdirSync('/proc/self/fd').map(Number);
}

test('runCommand returns the exit code and both outputs', async () => {
  const r = await runCommand('sh', ['-c', 'echo out; echo err >&2; exit 3']);
  assert.deepEqual(
    { code: r.code, signal: r.signal, stdout: r.stdout, stderr: r.stderr },
    { code: 3, signal: null, stdout: 'out\n', stderr: 'err\n' },
  );
  assert.equal(r.timedOut, false);
  assert.equal(r.overflowed, false);
});

test('runCommand feeds its input on stdin, and stdin is /dev/null without one', async () => {
  const fed = await runCommand('cat', [], { input: 'hello\nworld\n' });
  assert.equal(fed.stdout, 'hello\nworld\n');
  const none = await runCommand('sh', ['-c', 'readlink /proc/self/fd/0; cat']);
  assert.equal(none.stdout, '/dev/null\n');
  assert.equal(none.code, 0);
});

test('the child inherits what a child_process child inherits: stdio, no descriptor of ours', async () => {
  const list = 'ls /proc/self/fd';
  const viaNode = await new Promise<string>((resolve, reject) =>
    execFile('sh', ['-c', list], (err, stdout) => (err ? reject(err) : resolve(stdout))),
  );
  const r = await runCommand('sh', ['-c', list]);
  assert.deepEqual(r.stdout.trim().split('\n').sort(), viaNode.trim().split('\n').sort());
});

test('every standard signal is at its default in the child, none blocked (Node ignores SIGPIPE)', async () => {
  const r = await runCommand('sh', ['-c', 'grep -E "^Sig(Ign|Blk)" /proc/self/status']);
  const masks = Object.fromEntries(
    r.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(/:\s+/) as [string, string]),
  );
  assert.equal(BigInt(`0x${masks.SigBlk}`), 0n);
  // Signals 1-31. glibc's posix_spawn leaves its two internal real-time signals (32, 33)
  // ignored in every child it starts; no program uses them.
  assert.equal(BigInt(`0x${masks.SigIgn}`) & 0x7fffffffn, 0n, masks.SigIgn);
});

test('a timeout kills the command with SIGTERM and says so', async () => {
  const r = await runCommand('sleep', ['30'], { timeoutMs: 100 });
  assert.equal(r.timedOut, true);
  assert.equal(r.code, null);
  assert.equal(r.signal, 'SIGTERM');
});

test('output past maxBuffer is cut there and the command is killed', async () => {
  // `yes` writes until it is stopped: only the kill ends it.
  const r = await runCommand('yes', ['x'], { maxBuffer: 1000 });
  assert.equal(r.overflowed, true);
  assert.equal(r.stdout.length, 1000);
  assert.equal(r.signal, 'SIGTERM');
});

test('an unknown command throws ENOENT and leaves no descriptor open', async () => {
  const before = openFds();
  await assert.rejects(
    runCommand('drover-no-such-command', []),
    (err: unknown) => err instanceof SyscallError && err.errnoName === 'ENOENT',
  );
  assert.deepEqual(openFds(), before);
});

test('a finished command leaves no descriptor open and no child behind', async () => {
  const before = openFds();
  for (let i = 0; i < 5; i++) await runCommand('true', [], { input: 'x' });
  const after = openFds().filter((fd) => {
    try {
      return !readlinkSync(`/proc/self/fd/${fd}`).startsWith('anon_inode:[eventpoll]');
    } catch {
      return false;
    }
  });
  for (const fd of after) assert.ok(before.includes(fd), `fd ${fd} left open`);
  const children = readdirSync('/proc/self/task')
    .flatMap((t) => {
      try {
        return readlinkSync(`/proc/self/task/${t}/children`);
      } catch {
        return [];
      }
    })
    .join('');
  assert.equal(children, '');
});

test('the environment given is the one the command sees', async () => {
  const r = await runCommand('sh', ['-c', 'echo "$DROVER_SPAWN_TEST"'], {
    env: { PATH: process.env.PATH, DROVER_SPAWN_TEST: 'yes' },
  });
  assert.equal(r.stdout, 'yes\n');
});

test('spawnDirect gives the child our descriptors at 3, 4, ... even one numbered below them', async () => {
  const [r, w] = [openSync('/dev/null', 'r'), openSync('/dev/zero', 'r')];
  try {
    // fd 1 is below the child's fd 4: it must be moved out of the way, not overwritten.
    const child = spawnDirect(
      'sh',
      ['-c', 'readlink /proc/self/fd/3 /proc/self/fd/4 /proc/self/fd/5'],
      {
        extraFds: [r, w, 1],
        stderr: 'ignore',
      },
    );
    const out = await collectAll(child.stdout!);
    const status = await child.exited;
    assert.equal(status.exitCode, 0);
    assert.deepEqual(out.trim().split('\n'), [
      '/dev/null',
      '/dev/zero',
      readlinkSync('/proc/self/fd/1'),
    ]);
  } finally {
    closeSync(r);
    closeSync(w);
  }
});

test('spawnDirect: kill reaches the child, exitStatus says how it ended, a second kill is refused', async () => {
  const child = spawnDirect('sleep', ['30'], { stdout: 'ignore', stderr: 'ignore' });
  assert.equal(child.exitStatus, null);
  assert.equal(child.kill('SIGKILL'), true);
  const status = await child.exited;
  assert.equal(status.signal, 'SIGKILL');
  assert.deepEqual(child.exitStatus, status);
  assert.equal(child.kill('SIGKILL'), false);
});

function collectAll(s: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    s.on('data', (b: Buffer) => (text += b.toString()));
    s.on('close', () => resolve(text));
  });
}

test("spawnDirect: a 'pipe' among extraFds is one the child writes and we read", async () => {
  const child = spawnDirect('sh', ['-c', 'echo ready >&3'], {
    stdout: 'ignore',
    stderr: 'ignore',
    extraFds: ['pipe'],
  });
  assert.equal(await collectAll(child.pipes.get(3)!), 'ready\n');
  assert.equal((await child.exited).exitCode, 0);
});
