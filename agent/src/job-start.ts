/**
 * Did a new job's command really start? `run` answers only once the command's exec succeeded,
 * and reports a failed exec (no such program, not executable) as a failure with the shell's
 * reason, as `docker run` does, instead of "running" followed at once by exit 127.
 */
import { join } from 'node:path';
import { childrenOf, procEntry, type ProcEntry } from '@drover/native';
import { readNoFollow } from './job-dir-fs.js';
import { TTY_RELAY, WRAPPER_NAME } from './job-init.js';
import { JobFiles, type JobStore } from './job-store.js';

export { WRAPPER_NAME };

/** Why a command did not start. */
export interface StartFailure {
  /** The shell's own words, e.g. `/nonexistent/binary: not found`. */
  reason: string;
  /** 127 (not found) or 126 (cannot execute), as a shell reports them. */
  exitCode: number;
}

/** How long the command may take to exec before `run` stops waiting and reports it running. */
const EXEC_WAIT_MS = 10_000;

/**
 * Wait until the command of a job just started has exec'd, or its wrapper has reported that the
 * exec failed. `mainPid` is what the start found: the wrapper's child, which is a copy of the
 * wrapper shell until its exec succeeds (same command line) and the command after it. Returns
 * null when the command started (or ran and ended on its own), the failure otherwise.
 */
export async function confirmStart(
  store: JobStore,
  jobId: string,
  started: { rootPid: number | null; mainPid: number | null },
  waitMs = EXEC_WAIT_MS,
): Promise<StartFailure | null> {
  const deadline = Date.now() + waitMs;
  // The wrapper's own steps (`mv .../exit-status.tmp ...`, `mv .../main-pid.tmp ...`, the
  // terminal's FIFO) are children of the wrapper too: never taken for the command.
  const dir = store.jobDir(jobId);
  const bookkeeping = [
    `${join(dir, JobFiles.exitStatus)}.tmp`,
    `${join(dir, JobFiles.mainPid)}.tmp`,
    join(dir, JobFiles.ttyIn),
  ];
  for (;;) {
    // Found again each time when the start did not name it: the wrapper's child is first a copy
    // of the wrapper, then (with a terminal) the relay, and only under it the command.
    const main = started.mainPid ?? (started.rootPid === null ? null : commandOf(started.rootPid));
    if (main !== null) {
      const self = procEntry(main);
      if (hasExeced(self, self === null ? null : procEntry(self.ppid), bookkeeping)) return null;
    }
    const code = await store.exitStatus(jobId);
    if (code !== null) return code === 126 || code === 127 ? failureOf(store, jobId, code) : null;
    // The whole job is gone without a status: nothing more to learn here (supervision records it).
    if (started.rootPid === null || procEntry(started.rootPid) === null) return null;
    if (Date.now() > deadline) return null;
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * tini → wrapper shell → the command's process (or the wrapper's copy of itself before exec);
 * with a terminal, tini → wrapper → relay → the command's process (or the relay's copy of
 * itself, then the shell it runs on the terminal, before the exec).
 */
function commandOf(rootPid: number): number | null {
  const wrapper = childrenOf(rootPid)[0];
  const child = wrapper === undefined ? undefined : childrenOf(wrapper)[0];
  if (child === undefined) return null;
  return isRelay(procEntry(child)) ? (childrenOf(child)[0] ?? null) : child;
}

/** The terminal relay: `python3 -I -c RELAY TTYCMD drover-job` (job-init.ts). */
function isRelay(p: Pick<ProcEntry, 'cmdline'> | null): boolean {
  const c = p?.cmdline ?? [];
  return c[1] === '-I' && c[2] === '-c' && c[3] === TTY_RELAY && c[5] === WRAPPER_NAME;
}

/**
 * Whether the wrapper's child has exec'd the command: it runs, and its command line is no longer
 * its parent's (the wrapper's copy of itself before the exec). A zombie — the copy whose exec
 * failed, not yet reaped — has no command line and has not started anything; nor has a shell
 * running as the wrapper (`$0` is WRAPPER_NAME: with a terminal, the one the relay starts on it
 * before the exec), nor one of the wrapper's own steps (`bookkeeping`: the paths they name).
 */
export function hasExeced(
  self: Pick<ProcEntry, 'state' | 'cmdline'> | null,
  parent: Pick<ProcEntry, 'cmdline'> | null,
  bookkeeping: string | readonly string[] = [],
): boolean {
  if (self === null || parent === null) return false;
  if (self.state === 'Z' || self.state === 'X' || self.cmdline.length === 0) return false;
  if (self.cmdline[1] === '-c' && self.cmdline[3] === WRAPPER_NAME) return false;
  // The wrapper recording the main process or the exit status: not the command.
  const own = typeof bookkeeping === 'string' ? [bookkeeping] : bookkeeping;
  if (own.some((path) => self.cmdline.includes(path))) return false;
  return !sameArgs(self.cmdline, parent.cmdline);
}

function sameArgs(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * 126/127 is a failed exec only when the wrapper itself said so on stderr, or, for a job run
 * with a terminal (`-t`), on that terminal, whose output is the stdout log
 * (`drover-job: 1: exec: PROGRAM: not found`); a command that ran and exited 127 on its own
 * is not a failed start.
 */
async function failureOf(
  store: JobStore,
  jobId: string,
  exitCode: number,
): Promise<StartFailure | null> {
  for (const file of [JobFiles.stderr, JobFiles.stdout]) {
    let text = '';
    try {
      const got = await readNoFollow(join(store.jobDir(jobId), file), {
        maxBytes: 16 * 1024,
        tail: true,
      });
      text = got.data.toString('utf8');
    } catch {
      continue;
    }
    const line = text
      .split('\n')
      .reverse()
      .find((l) => l.startsWith(`${WRAPPER_NAME}: `) && / exec: /.test(l));
    if (line !== undefined)
      return { reason: line.slice(line.indexOf(' exec: ') + ' exec: '.length).trim(), exitCode };
  }
  return null;
}
