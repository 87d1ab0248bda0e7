/** Process supervision primitives: the child-subreaper flag, pidfds, waitid on a pidfd, exit waits. */
import koffi from 'koffi';
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { DroverError, ErrorCode } from '@drover/common';
import { SyscallError } from './errors.js';
import { fail, libc, LINUX, retryEintr } from './libc.js';
import { watchReadable, type FdWatch } from './poll.js';

/** How a process ended. Exactly one of `exitCode` and `signal` is set, unless the status is unknown. */
export interface ChildStatus {
  pid: number;
  /** The exit status (0-255) when it exited normally. */
  exitCode: number | null;
  /** The signal that killed it. Null too for signals Node has no name for (real-time ones). */
  signal: NodeJS.Signals | null;
  /** Killed by a signal and dumped core (CLD_DUMPED). */
  coreDumped: boolean;
}

/** Options of {@link waitidPidfd}. */
export interface WaitOptions {
  /** WNOHANG: return null instead of blocking while the process still runs. */
  nohang?: boolean;
  /** WNOWAIT: report the status but leave the process waitable (a zombie). */
  nowait?: boolean;
}

let signalNames: Map<number, NodeJS.Signals> | null = null;

/** The name Node uses for signal number `n` (SIGABRT over SIGIOT: first in Node's table wins). */
function signalName(n: number): NodeJS.Signals | null {
  if (signalNames === null) {
    const names = new Map<number, NodeJS.Signals>();
    for (const [name, value] of Object.entries(osConstants.signals)) {
      if (!names.has(value)) names.set(value, name as NodeJS.Signals);
    }
    signalNames = names;
  }
  return signalNames.get(n) ?? null;
}

/**
 * Make this process a child subreaper (PR_SET_CHILD_SUBREAPER) or stop being one: orphans of
 * descendants get reparented to us instead of to PID 1, so we can waitid them. Per process.
 */
export function setChildSubreaper(on: boolean): void {
  const ul = 'unsigned long';
  const r = libc().prctl(LINUX.PR_SET_CHILD_SUBREAPER, ul, on ? 1 : 0, ul, 0, ul, 0, ul, 0);
  if (r < 0) throw fail('prctl', `PR_SET_CHILD_SUBREAPER, ${on ? 1 : 0}`);
}

/** Whether this process is a child subreaper (PR_GET_CHILD_SUBREAPER). */
export function isChildSubreaper(): boolean {
  const out = Buffer.alloc(koffi.sizeof('int'));
  const ul = 'unsigned long';
  const r = libc().prctl(LINUX.PR_GET_CHILD_SUBREAPER, 'void *', out, ul, 0, ul, 0, ul, 0);
  if (r < 0) throw fail('prctl', 'PR_GET_CHILD_SUBREAPER');
  return (koffi.decode(out, 'int') as number) !== 0;
}

/**
 * Open a pidfd for `pid` (pidfd_open(2), always FD_CLOEXEC). The pidfd names that process for
 * good: unlike a PID it can never come to mean a recycled one. The caller closes it.
 * @throws SyscallError ESRCH when no such process exists.
 */
export function pidfdOpen(pid: number): number {
  assertInt('pid', pid, 1);
  const fd = libc().syscall(LINUX.SYS_pidfd_open, 'int', pid, 'unsigned int', 0);
  if (fd < 0) throw fail('pidfd_open', pid);
  return fd;
}

/**
 * Send `signal` (a name like `'SIGTERM'` or a number) to the process behind `pidfd`
 * (pidfd_send_signal(2)). Signalling an exited process fails with ESRCH.
 */
export function pidfdSendSignal(pidfd: number, signal: NodeJS.Signals | number): void {
  const signo = typeof signal === 'number' ? signal : osConstants.signals[signal];
  if (signo === undefined || !Number.isInteger(signo) || signo < 0 || signo > 64) {
    throw new DroverError(ErrorCode.InvalidArgument, `pidfdSendSignal: unknown signal ${signal}`);
  }
  const c = libc();
  const r = c.syscall(
    LINUX.SYS_pidfd_send_signal,
    'int',
    pidfd,
    'int',
    signo,
    'void *',
    null,
    'unsigned int',
    0,
  );
  if (r < 0) throw fail('pidfd_send_signal', `${pidfd}, ${signalName(signo) ?? signo}`);
}

/**
 * waitid(P_PIDFD, pidfd, WEXITED | ...): reap (or with `nowait`, peek at) the exited process
 * behind `pidfd`. Works only for our own children (including orphans reparented to us as
 * subreaper); for anyone else it throws SyscallError ECHILD. Without `nohang` it blocks the
 * event loop until the process exits; prefer {@link waitForExit}. A pidfd made non-blocking
 * (watchReadable does that) turns a blocking wait on a running process into EAGAIN.
 * @returns null with `nohang` while the process still runs.
 */
export function waitidPidfd(pidfd: number, options: WaitOptions = {}): ChildStatus | null {
  const c = libc();
  const layout = c.siginfo;
  const flags =
    LINUX.WEXITED | (options.nohang ? LINUX.WNOHANG : 0) | (options.nowait ? LINUX.WNOWAIT : 0);
  const info = Buffer.alloc(layout.size);
  if (retryEintr(() => c.waitid(LINUX.P_PIDFD, pidfd, info, flags)) < 0) {
    throw fail('waitid', `P_PIDFD, ${pidfd}`);
  }
  const pid = koffi.decode(info, layout.pid, 'int') as number;
  // With WNOHANG and nothing to report the kernel leaves si_pid 0 (the buffer started zeroed).
  if (pid === 0) return null;
  const code = koffi.decode(info, layout.code, 'int') as number;
  const status = koffi.decode(info, layout.status, 'int') as number;
  switch (code) {
    case LINUX.CLD_EXITED:
      return { pid, exitCode: status, signal: null, coreDumped: false };
    case LINUX.CLD_KILLED:
    case LINUX.CLD_DUMPED:
      return {
        pid,
        exitCode: null,
        signal: signalName(status),
        coreDumped: code === LINUX.CLD_DUMPED,
      };
    default:
      throw new DroverError(ErrorCode.Internal, `waitid: unexpected si_code ${code} for ${pid}`);
  }
}

/**
 * Resolve when the process behind `pidfd` exits, without blocking the event loop: wait for the
 * pidfd to become readable, then reap it with waitid(WNOHANG). For a process that is not our
 * child (waitid says ECHILD, e.g. Node reaped it first) the status cannot be known: it resolves
 * with `exitCode` and `signal` null. `pid` comes from /proc/self/fdinfo when called (-1 if the
 * process was already reaped then). Keep `pidfd` open until this settles; it is left
 * O_NONBLOCK.
 */
export function waitForExit(pidfd: number): Promise<ChildStatus> {
  return new Promise<ChildStatus>((resolve, reject) => {
    const pid = pidOfPidfd(pidfd);
    let watch: FdWatch | null = null;
    const finish = (settle: () => void): void => {
      watch?.stop();
      watch = null;
      settle();
    };
    watch = watchReadable(pidfd, () => {
      if (watch === null) return;
      let status: ChildStatus | null;
      try {
        status = waitidPidfd(pidfd, { nohang: true });
      } catch (err) {
        if (err instanceof SyscallError && err.errno === LINUX.ECHILD) {
          const unknown: ChildStatus = { pid, exitCode: null, signal: null, coreDumped: false };
          finish(() => resolve(unknown));
        } else {
          finish(() => reject(err));
        }
        return;
      }
      // Null: a spurious wake-up (readable means exited, and a child that exited is waitable).
      if (status !== null) {
        const result = status;
        finish(() => resolve(result));
      }
    });
  });
}

/** The PID a pidfd refers to, from the `Pid:` line of /proc/self/fdinfo/<fd> (-1 once reaped). */
function pidOfPidfd(pidfd: number): number {
  assertInt('pidfd', pidfd, 0);
  let text: string;
  try {
    text = readFileSync(`/proc/self/fdinfo/${pidfd}`, 'utf8');
  } catch (err) {
    // Node reports errno negated; ENOENT here means `pidfd` is not an open descriptor.
    const errno = Math.abs((err as NodeJS.ErrnoException).errno ?? 5);
    throw new SyscallError('open', errno, { args: `/proc/self/fdinfo/${pidfd}`, cause: err });
  }
  const m = /^Pid:\s*(-?\d+)\s*$/m.exec(text);
  if (m === null || m[1] === undefined) {
    throw new DroverError(ErrorCode.InvalidArgument, `fd ${pidfd} is not a pidfd`);
  }
  return Number(m[1]);
}

function assertInt(what: string, n: number, min: number): void {
  if (!Number.isInteger(n) || n < min || n > 0x7fffffff) {
    throw new DroverError(ErrorCode.InvalidArgument, `${what} must be an integer >= ${min}: ${n}`);
  }
}
