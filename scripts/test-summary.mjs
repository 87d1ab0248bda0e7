#!/usr/bin/env node
// Sums the node:test summaries of every package in a `turbo run test` log and prints the plain
// closing line CI reads: "N passed, N failed", after a line saying how long the run took (from
// DROVER_RUN_STARTED, and the tests alone from DROVER_TESTS_STARTED: epoch seconds, set by ./run
// and .ci/run). Exits non-zero when anything failed.
// Usage: node scripts/test-summary.mjs LOG [RUNNER_EXIT_STATUS]
import { readFileSync } from 'node:fs';

const [logPath, statusArg = '0'] = process.argv.slice(2);
if (!logPath) {
  console.error('usage: test-summary.mjs LOG [STATUS]');
  process.exit(2);
}
const text = readFileSync(logPath, 'utf8');
let passed = 0;
let failed = 0;
let summaries = 0;
// Spec reporter: "ℹ pass 12"; TAP reporter: "# pass 12". Turbo prefixes "pkg:test: ".
for (const line of text.split('\n')) {
  const m = /(?:^|\s)(?:ℹ|#) (pass|fail|cancelled) (\d+)\s*$/.exec(line);
  if (!m) continue;
  const n = Number(m[2]);
  if (m[1] === 'pass') {
    passed += n;
    summaries++;
  } else {
    failed += n;
  }
}
const status = Number(statusArg);
if (status !== 0 && failed === 0) {
  // The runner failed without a failing test (a build error, a crash): count it as one failure.
  console.log(`test-summary: the test command exited ${status} with no failing test counted`);
  failed = 1;
}
if (summaries === 0 && status === 0) {
  console.log('test-summary: no test summary found in the log');
  failed = 1;
}
/** Seconds since an epoch-seconds environment variable, as "N min N s"; null when unset. */
function since(name) {
  const start = Number(process.env[name]);
  if (!Number.isFinite(start) || start <= 0) return null;
  const s = Math.max(0, Math.round(Date.now() / 1000 - start));
  return `${Math.floor(s / 60)} min ${s % 60} s`;
}
const all = since('DROVER_RUN_STARTED');
const tests = since('DROVER_TESTS_STARTED');
if (all !== null) console.log(`took ${all}${tests !== null ? ` (the tests ${tests})` : ''}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
