/** @drover/native: the only package that calls into libc (through koffi). */
export { SyscallError, getErrnoName } from './errors.js';
export type { SyscallErrorOptions } from './errors.js';
export { setNonBlocking, setCloexec, closeFd } from './fd.js';
export { socketpairSeqpacket, sendmsg, recvmsg } from './socket.js';
export type { RecvResult, SocketpairOptions } from './socket.js';
export { watchReadable } from './poll.js';
export type { FdWatch, ReadableEvent } from './poll.js';
export {
  setChildSubreaper,
  isChildSubreaper,
  pidfdOpen,
  pidfdSendSignal,
  waitidPidfd,
  waitForExit,
} from './process.js';
export type { ChildStatus, WaitOptions } from './process.js';
export { setns, NamespaceType, JOB_NAMESPACE_FLAGS } from './namespace.js';
export {
  childrenOf,
  exeOf,
  isSameLiveProcess,
  procEntry,
  processTree,
  procStat,
  sessionId,
  startTicks,
  statFields,
} from './procfs.js';
export type { ProcEntry, ProcStat } from './procfs.js';
export { SchedPolicy, setThreadScheduling, threadScheduling } from './sched.js';
export type { ThreadScheduling } from './sched.js';
export { DirectChild, runCommand, spawnDirect } from './spawn.js';
export type { DirectOptions, Ran, RunOptions } from './spawn.js';
