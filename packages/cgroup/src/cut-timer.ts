/**
 * The cut timer: a worker thread that makes a cut's cgroup writes at an instant, whatever this
 * process's event loop is busy with then, and watches the cgroups freeze.
 *
 * Why a thread: an agent's event loop may be busy for milliseconds at a time (a dump's streams, a
 * push, JSON of a big reply), and a timer on it fires when the loop gets round to it. The thread
 * does nothing else: it sleeps on a futex (`Atomics.wait`) until just before the instant, spins to
 * it, then writes each freeze file in turn with synchronous calls (microseconds each). Its source
 * is inline (an `eval` worker) so the agent's single-file bundle carries it.
 *
 * One thread per process, started on first use (or by {@link prepareCutTimer}) and kept; it
 * keeps the process alive only while a cut is pending.
 *
 * Its priority: on a host whose CPUs are busy, a thread of the normal policy that wakes from its
 * sleep waits for a CPU behind whatever runs there (0–17 ms on the loaded testbed), and that wait
 * was most of a cluster cut's skew. So while a cut is armed (sent to the thread, its writes not
 * yet made) the thread runs SCHED_FIFO at a modest priority ({@link CutTimerOptions.priority});
 * it wakes on time then, and needs a shorter spin. Dropped as soon as the writes are made. Where
 * that is not permitted (no CAP_SYS_NICE, no real-time budget in its cpu cgroup) the thread keeps
 * the normal policy and a warning says so, once.
 */
import { Worker } from 'node:worker_threads';
import { nullLogger, type Logger } from '@drover/common';
import { SchedPolicy, setThreadScheduling } from '@drover/native';

/** One cgroup of a scheduled cut: what to write where, and how to tell it is frozen. */
export interface TimedFreeze {
  /** The control file to write (`freezer.state`, `cgroup.freeze`) and the value. */
  write: string;
  value: string;
  /** The file to read, and a multi-line regular expression that matches when it is frozen. */
  watch: string;
  frozen: string;
}

/** A cut to make at `atMs` (epoch ms, `performance.timeOrigin + performance.now()`). */
export interface TimedCut {
  atMs: number;
  /** Refuse (`missed`, nothing written) if it is already this late when the thread gets it. */
  lateMs: number;
  targets: readonly TimedFreeze[];
  /** Watch the cgroups freeze for at most this long after the writes (the caller goes on). */
  watchMs: number;
}

/** How the cut timer runs (see {@link prepareCutTimer}). */
export interface CutTimerOptions {
  /**
   * SCHED_FIFO priority (1–99) of the thread while a cut is armed; 0: the normal policy always.
   * Modest (the agent's default is 10): below the kernel's interrupt threads (50).
   */
  priority?: number;
  /** Told, once, when the priority cannot be had. */
  log?: Logger;
}

/** What the thread did: nothing (missed), some writes then a failure, or every write. */
export type TimedCutResult =
  | { kind: 'missed'; lateMs: number }
  | { kind: 'failed'; index: number; message: string; errno: string | undefined }
  | {
      kind: 'done';
      /** When the first write was made. */
      issuedAtMs: number;
      /** When each write returned: from then on none of that cgroup's tasks runs user code. */
      requestedAt: number[];
      /** When each was first seen frozen (null: not yet when the watch ended). */
      frozenAt: (number | null)[];
    };

/**
 * Sleep to this long before the instant, then spin: a futex wait can wake a little late. A
 * thread of the normal policy can wake milliseconds late on a busy host; a real-time one wakes
 * within tens of microseconds, so it spins less (a real-time spin is a CPU nobody else gets).
 * Both are hard bounds on the spin: it never starts earlier than this before the instant.
 */
const SPIN_MS = 2;
const REALTIME_SPIN_MS = 0.5;
/** Between two looks at the cgroups while they freeze. */
const WATCH_EVERY_MS = 0.2;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { readFileSync, readlinkSync, writeFileSync } = require('node:fs');
const now = () => performance.timeOrigin + performance.now();
const nap = new Int32Array(new SharedArrayBuffer(4));
const sleep = (ms) => { if (ms > 0) Atomics.wait(nap, 0, 0, ms); };
// 'PID/task/TID': the thread's own id, for its scheduling policy (set from the main thread).
// Null without /proc: the thread keeps the normal policy.
let tid = null;
try { tid = Number(readlinkSync('/proc/thread-self').split('/')[2]) || null; } catch {}
parentPort.postMessage({ tid });
parentPort.on('message', ({ id, cut }) => {
  const post = (r) => parentPort.postMessage({ id, result: r });
  const spinMs = Math.min(${SPIN_MS}, Math.max(0, cut.spinMs));
  let left = cut.atMs - now();
  if (left < -cut.lateMs) return post({ kind: 'missed', lateMs: -left });
  while ((left = cut.atMs - now()) > spinMs) sleep(left - spinMs);
  // At most spinMs (the loop above leaves no more): the bound on a real-time spin.
  while (now() < cut.atMs);
  const issuedAtMs = now();
  const requestedAt = [];
  for (let i = 0; i < cut.targets.length; i++) {
    try {
      writeFileSync(cut.targets[i].write, cut.targets[i].value, { flag: 'w' });
    } catch (e) {
      return post({ kind: 'failed', index: i, message: String(e && e.message), errno: e && e.code });
    }
    requestedAt.push(now());
  }
  // The writes are made: the main thread drops the priority (the watch needs none).
  parentPort.postMessage({ id, issued: true });
  const frozen = cut.targets.map((t) => new RegExp(t.frozen, 'm'));
  const frozenAt = cut.targets.map(() => null);
  const until = now() + cut.watchMs;
  for (;;) {
    for (let i = 0; i < frozen.length; i++) {
      if (frozenAt[i] !== null) continue;
      let text = '';
      try { text = readFileSync(cut.targets[i].watch, 'utf8'); } catch {}
      if (frozen[i].test(text)) frozenAt[i] = now();
    }
    if (frozenAt.every((t) => t !== null) || now() >= until) break;
    sleep(${WATCH_EVERY_MS});
  }
  post({ kind: 'done', issuedAtMs, requestedAt, frozenAt });
});
`;

interface PendingCut {
  resolve(r: TimedCutResult): void;
  reject(e: unknown): void;
  /** Sent to the thread, its writes not yet made: the thread wants its priority. */
  armed: boolean;
}

interface Timer {
  worker: Worker;
  /** Resolves once the thread runs and has said its TID. */
  online: Promise<void>;
  pending: Map<number, PendingCut>;
  tid: number | null;
  /** Whether the thread runs SCHED_FIFO now. */
  realtime: boolean;
}

type FromThread =
  { tid: number | null } | { id: number; issued: true } | { id: number; result: TimedCutResult };

let timer: Timer | null = null;
let nextId = 1;
let options: Required<CutTimerOptions> = { priority: 0, log: nullLogger };
/** The priority was refused once: said once, tried again at the next cut without a word. */
let refusalLogged = false;

function started(): Timer {
  if (timer) return timer;
  const worker = new Worker(WORKER_SOURCE, { eval: true });
  let said: () => void = () => undefined;
  const online = new Promise<void>((resolve, reject) => {
    said = resolve;
    worker.once('error', reject);
  });
  const t: Timer = { worker, online, pending: new Map(), tid: null, realtime: false };
  const fail = (err: unknown): void => {
    if (timer === t) timer = null;
    for (const p of t.pending.values()) p.reject(err);
    t.pending.clear();
  };
  worker.on('message', (m: FromThread) => {
    if ('tid' in m) {
      t.tid = m.tid;
      said();
    } else if ('issued' in m) {
      const p = t.pending.get(m.id);
      if (p) p.armed = false;
    } else {
      t.pending.get(m.id)?.resolve(m.result);
      t.pending.delete(m.id);
      if (t.pending.size === 0) worker.unref();
    }
    schedule(t);
  });
  worker.on('error', fail);
  worker.on('exit', (code) => fail(new Error(`the cut timer thread exited (${code})`)));
  // Kept alive while it boots (someone is waiting for it), then only while a cut is pending.
  online.then(
    () => t.pending.size === 0 && worker.unref(),
    () => undefined,
  );
  timer = t;
  return t;
}

/**
 * The thread's policy as its cuts want it: SCHED_FIFO at the configured priority while one is
 * armed, the normal policy otherwise. A refusal leaves the normal policy (logged once).
 */
function schedule(t: Timer): void {
  const want = options.priority > 0 && [...t.pending.values()].some((p) => p.armed);
  if (t.tid === null || want === t.realtime) return;
  try {
    if (want) setThreadScheduling(t.tid, SchedPolicy.Fifo, options.priority);
    else setThreadScheduling(t.tid, SchedPolicy.Other);
    t.realtime = want;
  } catch (err) {
    // Dropping it can only fail if the thread is gone (its exit fails the pending cuts).
    if (want && !refusalLogged) {
      refusalLogged = true;
      options.log.warn('the cut timer runs at normal priority: a real-time one was refused', {
        priority: options.priority,
        err,
      });
    }
  }
}

/**
 * Start the thread now (once; it takes tens of milliseconds, more on a busy host), so that a cut
 * does not wait for it to boot, and set how it runs (for every later cut). Resolves when it runs.
 */
export function prepareCutTimer(o: CutTimerOptions = {}): Promise<void> {
  options = { priority: o.priority ?? options.priority, log: o.log ?? options.log };
  return started().online;
}

/**
 * Have the thread make `cut` at its instant. Resolves with what it did; rejects only if the
 * thread itself failed (then which writes were made is unknown: the caller thaws every target).
 */
export function timedCut(cut: TimedCut): Promise<TimedCutResult> {
  const t = started();
  const id = nextId++;
  return new Promise((resolve, reject) => {
    t.pending.set(id, { resolve, reject, armed: true });
    // Kept alive while a cut is pending: a process with nothing else to do waits for it.
    t.worker.ref();
    // Before the message: the thread wakes for it, and for the instant, with its priority.
    schedule(t);
    t.worker.postMessage({ id, cut: { ...cut, spinMs: t.realtime ? REALTIME_SPIN_MS : SPIN_MS } });
  });
}

/** The cut timer's thread (this process, its TID), once it has said its TID; for tests. */
export function cutTimerThread(): { pid: number; tid: number } | null {
  return timer?.tid != null ? { pid: process.pid, tid: timer.tid } : null;
}
