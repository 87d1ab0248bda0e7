// Plain Node workload: a counter and a Map of accumulated values, re-derived from the counter on verify.
import process from 'node:process';
import { setInterval } from 'node:timers';
import { Workload, mix32, parseArgs } from './lib/contract.mjs';

const opts = parseArgs(process.argv.slice(2), { seed: '1', keys: '97' });
const seed = Number(opts.seed);
const keys = Number(opts.keys);
const w = new Workload('node', opts.dir);

let counter = 0;
const values = new Map();

/** Step n adds a seeded amount to one key; replaying steps 1..n gives the expected Map. */
function apply(map, n) {
  const key = `k${n % keys}`;
  map.set(key, (map.get(key) ?? 0) + (mix32(seed ^ n) % 1000));
}

function step() {
  counter += 1;
  apply(values, counter);
  w.beat(counter);
}

w.onVerify(() => {
  const expected = new Map();
  for (let n = 1; n <= counter; n++) apply(expected, n);
  const problems = [];
  if (expected.size !== values.size)
    problems.push(`${values.size} keys, expected ${expected.size}`);
  for (const [k, v] of expected) {
    if (values.get(k) !== v) problems.push(`${k}=${values.get(k)}, expected ${v}`);
  }
  return { checks: expected.size + 1, problems, counter };
});
w.onCorrupt(() => values.set('k0', (values.get('k0') ?? 0) + 1));

setInterval(step, 50);
process.on('SIGTERM', () => process.exit(0));
w.ready();
if (opts.failVerify === true) w.corruptNow();
