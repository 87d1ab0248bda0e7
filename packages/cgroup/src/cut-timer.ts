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
 */
import { Worker } from 'node:worker_threads';

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

/** What the thread did: nothing (missed), some writes then a failure, or every write. */
export type TimedCutResult =
  | { kind: 'missed'; lateMs: number }
  | { kind: 'failed'; index: number; message: string; errno: string | undefined }
  | {
      kind: 'done';
      /** When the first write was made. */
      issuedAtMs: number;
      /** When each was first seen frozen (null: not yet when the watch ended). */
      frozenAt: (number | null)[];
    };

/** Sleep to this long before the instant, then spin: a futex wait can wake a little late. */
const SPIN_MS = 2;
/** Between two looks at the cgroups while they freeze. */
const WATCH_EVERY_MS = 0.2;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { readFileSync, writeFileSync } = require('node:fs');
const now = () => performance.timeOrigin + performance.now();
const nap = new Int32Array(new SharedArrayBuffer(4));
const sleep = (ms) => { if (ms > 0) Atomics.wait(nap, 0, 0, ms); };
parentPort.on('message', ({ id, cut }) => {
  const post = (r) => parentPort.postMessage({ id, result: r });
  let left = cut.atMs - now();
  if (left < -cut.lateMs) return post({ kind: 'missed', lateMs: -left });
  while ((left = cut.atMs - now()) > ${SPIN_MS}) sleep(left - ${SPIN_MS});
  while (now() < cut.atMs);
  const issuedAtMs = now();
  for (let i = 0; i < cut.targets.length; i++) {
    try {
      writeFileSync(cut.targets[i].write, cut.targets[i].value, { flag: 'w' });
    } catch (e) {
      return post({ kind: 'failed', index: i, message: String(e && e.message), errno: e && e.code });
    }
  }
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
  post({ kind: 'done', issuedAtMs, frozenAt });
});
`;

interface Timer {
  worker: Worker;
  online: Promise<void>;
  pending: Map<number, { resolve(r: TimedCutResult): void; reject(e: unknown): void }>;
}

let timer: Timer | null = null;
let nextId = 1;

function started(): Timer {
  if (timer) return timer;
  const worker = new Worker(WORKER_SOURCE, { eval: true });
  const online = new Promise<void>((resolve, reject) => {
    worker.once('online', resolve);
    worker.once('error', reject);
  });
  const t: Timer = { worker, online, pending: new Map() };
  const fail = (err: unknown): void => {
    if (timer === t) timer = null;
    for (const p of t.pending.values()) p.reject(err);
    t.pending.clear();
  };
  worker.on('message', (m: { id: number; result: TimedCutResult }) => {
    t.pending.get(m.id)?.resolve(m.result);
    t.pending.delete(m.id);
    if (t.pending.size === 0) worker.unref();
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
 * Start the thread now (once; it takes tens of milliseconds, more on a busy host), so that a cut
 * does not wait for it to boot. Resolves when it runs.
 */
export function prepareCutTimer(): Promise<void> {
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
    t.pending.set(id, { resolve, reject });
    // Kept alive while a cut is pending: a process with nothing else to do waits for it.
    t.worker.ref();
    t.worker.postMessage({ id, cut });
  });
}
