import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SyscallError } from './errors.js';
import { SchedPolicy, setThreadScheduling, threadScheduling } from './sched.js';

// This test's main thread: its TID is the PID.
const self = process.pid;

test('a thread set to SCHED_FIFO reads so in its stat, and back to the normal policy', () => {
  assert.deepEqual(threadScheduling(self, self), { policy: SchedPolicy.Other, priority: 0 });
  setThreadScheduling(self, SchedPolicy.Fifo, 3);
  try {
    assert.deepEqual(threadScheduling(self, self), { policy: SchedPolicy.Fifo, priority: 3 });
  } finally {
    setThreadScheduling(self, SchedPolicy.Other);
  }
  assert.deepEqual(threadScheduling(self, self), { policy: SchedPolicy.Other, priority: 0 });
});

test('a bad priority is EINVAL, a thread that is not there is null', () => {
  assert.throws(
    () => setThreadScheduling(self, SchedPolicy.Fifo, 100),
    (e) => e instanceof SyscallError && e.errnoName === 'EINVAL',
  );
  assert.equal(threadScheduling(self, 0x3fffffff), null);
});
