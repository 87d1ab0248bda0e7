// Threads workload: worker_threads each extending a hash chain, published through a seqlock in a
// SharedArrayBuffer segment; the main thread re-derives every chain on verify.
import process from 'node:process';
import { setInterval, clearInterval, setTimeout, clearTimeout } from 'node:timers';
import { URL } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Workload, mix32, parseArgs } from './lib/contract.mjs';

const SEG = 4; // Int32 words per thread: [seqlock, counter, hash, unused]

/** Chain value after n steps for thread `id`. */
function chainAt(seed, id, n) {
  let h = mix32(seed ^ Math.imul(id + 1, 0x85ebca6b));
  for (let i = 1; i <= n; i++) h = mix32(h ^ Math.imul(i, 0x9e3779b9));
  return h;
}

/** Read a segment consistently: retry while the writer holds the seqlock (odd) or moved it. */
function readSegment(sab, id) {
  for (;;) {
    const v1 = Atomics.load(sab, id * SEG);
    if (v1 % 2 !== 0) continue;
    const counter = Atomics.load(sab, id * SEG + 1);
    const hash = Atomics.load(sab, id * SEG + 2) >>> 0;
    if (Atomics.load(sab, id * SEG) === v1) return { counter, hash };
  }
}

function workerMain() {
  const { sab: shared, id, seed, intervalMs } = workerData;
  const sab = new Int32Array(shared);
  let counter = 0;
  let hash = chainAt(seed, id, 0);
  const publish = () => {
    Atomics.add(sab, id * SEG, 1); // odd: write in progress
    Atomics.store(sab, id * SEG + 1, counter);
    Atomics.store(sab, id * SEG + 2, hash | 0);
    Atomics.add(sab, id * SEG, 1);
  };
  publish();
  setInterval(() => {
    counter += 1;
    hash = mix32(hash ^ Math.imul(counter, 0x9e3779b9));
    publish();
  }, intervalMs);
  parentPort.on('message', (m) => {
    if (m === 'corrupt') {
      hash ^= 1;
      publish();
    } else if (m === 'snapshot') {
      parentPort.postMessage({ id, counter, hash });
    }
  });
}

function main() {
  const opts = parseArgs(process.argv.slice(2), { threads: '4', seed: '1', intervalMs: '5' });
  const threads = Number(opts.threads);
  const seed = Number(opts.seed) >>> 0;
  const w = new Workload('threads', opts.dir);
  const sab = new Int32Array(new SharedArrayBuffer(threads * SEG * 4));
  const workers = [];
  const pending = new Map(); // thread id → resolve of its outstanding snapshot
  for (let id = 0; id < threads; id++) {
    const worker = new Worker(new URL(import.meta.url), {
      workerData: { sab: sab.buffer, id, seed, intervalMs: Number(opts.intervalMs) },
    });
    worker.on('message', (m) => pending.get(m.id)?.(m));
    worker.on('error', (err) => process.stderr.write(`thread ${id}: ${err.stack}\n`));
    workers.push(worker);
  }
  const total = () => {
    let n = 0;
    for (let id = 0; id < threads; id++) n += readSegment(sab, id).counter;
    return n;
  };
  const snapshot = (id) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`thread ${id} did not answer`)), 2000);
      pending.set(id, (m) => {
        clearTimeout(timer);
        pending.delete(id);
        resolve(m);
      });
      workers[id].postMessage('snapshot');
    });

  w.onVerify(async () => {
    const problems = [];
    let checks = 0;
    for (let id = 0; id < threads; id++) {
      const shared = readSegment(sab, id);
      const local = await snapshot(id).catch((err) => ({ error: err.message }));
      checks += 3;
      if (local.error) {
        problems.push(local.error);
        continue;
      }
      if (shared.hash !== chainAt(seed, id, shared.counter)) {
        problems.push(`thread ${id}: shared hash wrong at step ${shared.counter}`);
      }
      if (local.hash !== chainAt(seed, id, local.counter)) {
        problems.push(`thread ${id}: thread-local hash wrong at step ${local.counter}`);
      }
      if (local.counter < shared.counter) {
        problems.push(`thread ${id}: local counter ${local.counter} < shared ${shared.counter}`);
      }
    }
    return { checks, problems, counter: total() };
  });
  w.onCorrupt(() => workers[0].postMessage('corrupt'));

  // Ready once every thread has published its first step.
  const started = setInterval(() => {
    for (let id = 0; id < threads; id++) if (Atomics.load(sab, id * SEG) === 0) return;
    clearInterval(started);
    setInterval(() => w.beat(total()), 50);
    w.ready({ threads });
    if (opts.failVerify === true) w.corruptNow();
  }, 5);
  process.on('SIGTERM', () => process.exit(0));
}

if (isMainThread) main();
else workerMain();
