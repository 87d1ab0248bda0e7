// Memory workload: one large Buffer holding a seeded pattern that keeps changing slice by slice; the
// whole buffer is re-derived on verify from a small per-slice generation table.
import process from 'node:process';
import { Buffer } from 'node:buffer';
import { setInterval } from 'node:timers';
import { Workload, mix32, parseArgs, xorshift32 } from './lib/contract.mjs';

const SLICE_WORDS = 16384; // 64 KiB slices: 16384 slices for 1 GiB, one rewritten per step
const opts = parseArgs(process.argv.slice(2), { mb: '256', seed: '1', intervalMs: '10' });
const mb = Number(opts.mb);
if (!Number.isInteger(mb) || mb < 1 || mb > 4095) throw new Error(`--mb ${opts.mb}: want 1..4095`);
const seed = Number(opts.seed) >>> 0;
const w = new Workload('memory', opts.dir);

const buf = Buffer.allocUnsafeSlow(mb * 1024 * 1024);
const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
const slices = words.length / SLICE_WORDS;
const gens = new Uint32Array(slices); // the whole state of the pattern, besides the seed
const rng = xorshift32(seed ^ 0x5bd1e995);
let counter = 0;

/** Key of slice generation g: word i then holds mix32(i ^ key), i being its index in the buffer. */
function keyOf(g) {
  return mix32(seed ^ Math.imul(g + 1, 0x9e3779b9));
}

// mix32 is inlined in the two hot loops below: ~3x faster than a call per word.
function fillSlice(s) {
  const key = keyOf(gens[s]);
  const end = (s + 1) * SLICE_WORDS;
  for (let i = s * SLICE_WORDS; i < end; i++) {
    let x = i ^ key;
    x ^= x >>> 16;
    x = Math.imul(x, 0x7feb352d);
    x ^= x >>> 15;
    x = Math.imul(x, 0x846ca68b);
    words[i] = x ^ (x >>> 16);
  }
}

/** Index of the first wrong word in slice s, or -1. */
function checkSlice(s) {
  const key = keyOf(gens[s]);
  const end = (s + 1) * SLICE_WORDS;
  for (let i = s * SLICE_WORDS; i < end; i++) {
    let x = i ^ key;
    x ^= x >>> 16;
    x = Math.imul(x, 0x7feb352d);
    x ^= x >>> 15;
    x = Math.imul(x, 0x846ca68b);
    if (words[i] !== (x ^ (x >>> 16)) >>> 0) return i;
  }
  return -1;
}

function step() {
  counter += 1;
  const s = rng() % slices;
  gens[s] += 1;
  fillSlice(s);
  w.beat(counter);
}

w.onVerify(() => {
  const problems = [];
  let sum = 0;
  for (let s = 0; s < slices; s++) {
    sum += gens[s];
    const bad = checkSlice(s);
    if (bad >= 0 && problems.length < 5) {
      problems.push(`slice ${s} (gen ${gens[s]}) differs at byte ${bad * 4}`);
    }
  }
  // Each step bumps exactly one generation, so the table and the counter must agree.
  if (sum !== counter) problems.push(`generations sum to ${sum}, counter is ${counter}`);
  return { checks: slices + 1, problems, counter };
});
// Flip one byte, and bump one slice's generation without rewriting it: the byte may be rewritten by
// a later step before anyone looks, but the generations no longer sum to the counter, for good.
w.onCorrupt(() => {
  buf[rng() % buf.length] ^= 0xff;
  gens[rng() % slices] += 1;
});

const t0 = Date.now();
for (let s = 0; s < slices; s++) fillSlice(s);
const setupMs = Date.now() - t0;
setInterval(step, Number(opts.intervalMs));
process.on('SIGTERM', () => process.exit(0));
w.ready({ mb, setupMs });
if (opts.failVerify === true) w.corruptNow();
