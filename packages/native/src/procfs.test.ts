import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { isSameLiveProcess, procStat, sessionId, startTicks, statFields } from './procfs.js';

test('statFields: the fields after the command name, whatever the name holds', () => {
  const text = '42 (a) b (c)) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0\n';
  const f = statFields(text);
  assert.equal(f[0], 'S'); // field 3
  assert.equal(f[1], '1'); // field 4: ppid
  assert.equal(f[19], '12345'); // field 22: start time
});

test('procStat and startTicks read this process; a gone PID reads as null', () => {
  const st = procStat(process.pid);
  assert.ok(st);
  assert.equal(st.ppid, process.ppid);
  assert.equal(st.startTicks, startTicks(process.pid));
  assert.equal(st.session, sessionId(process.pid));
  assert.equal(procStat(2 ** 22 + 1), null); // above pid_max's ceiling
  assert.equal(startTicks(2 ** 22 + 1), null);
});

test('isSameLiveProcess: same PID and start time while alive; not once exited, nor with other ticks', async () => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  const pid = child.pid!;
  const ticks = startTicks(pid);
  assert.ok(ticks !== null);
  assert.equal(isSameLiveProcess(pid, ticks), true);
  assert.equal(isSameLiveProcess(pid, null), true);
  assert.equal(isSameLiveProcess(pid, ticks + 1), false);
  child.kill('SIGKILL');
  await once(child, 'exit');
  assert.equal(isSameLiveProcess(pid, ticks), false);
});
