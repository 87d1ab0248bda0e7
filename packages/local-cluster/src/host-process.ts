/** A long-lived process inside an emulated host: how it ended, its output, its checked kill. */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { killChecked, StopWaiting, waitFor } from './proc.js';

/** How a process ended. */
export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A long-lived process inside a host, addressed by its root-namespace PID. */
export interface HostProcess {
  readonly name: string;
  /** PID in the root namespace (the command itself, not nsenter). */
  readonly pid: number;
  /** PID inside the host's PID namespace. */
  readonly hostPid: number;
  readonly stdoutPath: string;
  readonly stderrPath: string;
  /** Settles when the command has exited; nsenter mirrors its exit code or killing signal. */
  readonly exited: Promise<ProcessExit>;
  /** Signal the command by PID (checked against its start time); false if it is already gone. */
  kill(signal?: NodeJS.Signals): boolean;
  /** Captured stdout + stderr so far. */
  output(): string;
  /** Wait until the captured output matches `re`; rejects if the process exits first. */
  waitForOutput(re: RegExp, timeoutMs?: number): Promise<string>;
}

/** Resolve when `child` has exited (immediately if it already has). */
export function exitOf(child: ChildProcess): Promise<ProcessExit> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** What {@link hostProcess} needs to know of a process `Host.spawn` started. */
export interface HostProcessInfo {
  name: string;
  /** The host's name, for messages. */
  host: string;
  pid: number;
  hostPid: number;
  /** Its start time, when it could be read: kills are checked against it. */
  start: number | undefined;
  stdoutPath: string;
  stderrPath: string;
  exited: Promise<ProcessExit>;
}

/** The handle of a process started inside a host. */
export function hostProcess(info: HostProcessInfo): HostProcess {
  const { name, host, pid, hostPid, start, stdoutPath, stderrPath, exited } = info;
  const readAll = (): string => {
    let s = '';
    for (const p of [stdoutPath, stderrPath]) {
      try {
        s += readFileSync(p, 'utf8');
      } catch {
        // not written yet
      }
    }
    return s;
  };
  let done = false;
  void exited.then(() => (done = true));
  return {
    name,
    pid,
    hostPid,
    stdoutPath,
    stderrPath,
    exited,
    kill: (signal = 'SIGTERM') =>
      killChecked(pid, signal, start === undefined ? {} : { startTime: start }),
    output: readAll,
    waitForOutput: (re, timeoutMs = 10_000) =>
      waitFor(
        `${re} in output of ${name} on ${host}`,
        () => {
          const s = readAll();
          if (re.test(s)) return s;
          if (done)
            throw new StopWaiting(`${name} exited before printing ${re}: ${s.slice(-2000)}`);
          return undefined;
        },
        timeoutMs,
        20,
      ),
  };
}
