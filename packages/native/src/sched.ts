/**
 * A thread's scheduling policy: sched_setscheduler(2) on one thread (a TID), and what
 * `/proc/<pid>/task/<tid>/stat` says it is.
 */
import { readFileSync } from 'node:fs';
import { fail, libc } from './libc.js';
import { statFields } from './procfs.js';

/** The scheduling policies Drover sets (sched(7)): the normal one and a real-time one. */
export const SchedPolicy = { Other: 0, Fifo: 1 } as const;
export type SchedPolicy = (typeof SchedPolicy)[keyof typeof SchedPolicy];

/** A thread's policy and real-time priority (0 for SCHED_OTHER; 1–99 for SCHED_FIFO). */
export interface ThreadScheduling {
  policy: number;
  priority: number;
}

/**
 * Set the policy of thread `tid` (a TID: on Linux sched_setscheduler acts on one thread, not its
 * whole process). SCHED_FIFO needs CAP_SYS_NICE (or RLIMIT_RTPRIO) and, with RT group
 * scheduling, a real-time budget in the thread's cpu cgroup.
 * @throws SyscallError EPERM when not allowed, ESRCH when no such thread, EINVAL for a bad priority.
 */
export function setThreadScheduling(tid: number, policy: SchedPolicy, priority = 0): void {
  if (!Number.isInteger(tid) || tid < 0) throw new RangeError(`bad thread id ${tid}`);
  const param = new Int32Array([priority]);
  if (libc().sched_setscheduler(tid, policy, param) < 0) {
    throw fail('sched_setscheduler', `${tid}, ${policy}, ${priority}`);
  }
}

/**
 * The policy and real-time priority of thread `tid` of process `pid` (fields 41 and 40 of its
 * `stat`), or null if it is gone.
 */
export function threadScheduling(pid: number, tid: number): ThreadScheduling | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const f = statFields(text);
  return { policy: Number(f[38]), priority: Number(f[37]) };
}
