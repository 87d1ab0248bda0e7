// Files workload: an O_APPEND log, a read-only input read through at a known offset and a read-write
// state file rewritten in place; verify compares offsets (from /proc/self/fdinfo) and contents with
// what the workload expects in memory.
import process from 'node:process';
import { Buffer } from 'node:buffer';
import { setInterval } from 'node:timers';
import fs from 'node:fs';
import path from 'node:path';
import { Workload, mix32, parseArgs } from './lib/contract.mjs';

const INPUT_SIZE = 4 * 1024 * 1024; // read 64 B per step: lasts ~55 min at 20 steps/s, then rewinds
const STATE_SIZE = 64 * 1024;
const CHUNK = 64;
const O_APPEND = 0o2000;

const opts = parseArgs(process.argv.slice(2), { seed: '1', intervalMs: '50' });
const seed = Number(opts.seed) >>> 0;
const w = new Workload('files', opts.dir);
const logPath = path.join(w.dir, 'files-log.txt');
const inputPath = path.join(w.dir, 'files-input.bin');
const statePath = path.join(w.dir, 'files-state.bin');

/** Byte `o` of the input file. */
const inputByte = (o) => (mix32(seed ^ (o >>> 2)) >>> ((o & 3) * 8)) & 0xff;
/** The log line of step n. */
const logLine = (n) => `step ${n} ${mix32(seed ^ n ^ 0xabcdef)}\n`;
/** Fill `rec` with the state-file record written at step n. */
function stateRecord(rec, n) {
  for (let i = 0; i < rec.length; i++) rec[i] = mix32(n * 131 + i) & 0xff;
}

const input = Buffer.alloc(INPUT_SIZE);
for (let o = 0; o < INPUT_SIZE; o++) input[o] = inputByte(o);
fs.writeFileSync(inputPath, input);
fs.writeFileSync(statePath, Buffer.alloc(STATE_SIZE));

let counter = 0;
let logBytes = 0; // bytes this job appended to the log
let inputOffset = 0; // where the input fd's offset must be
let stateOffset = 0; // where the state fd's offset must be
const mirror = Buffer.alloc(STATE_SIZE); // what the state file must contain
const logFd = fs.openSync(logPath, 'a');
let inputFd = fs.openSync(inputPath, 'r');
let stateFd = fs.openSync(statePath, 'r+');
const chunk = Buffer.alloc(CHUNK);
const problems = []; // found during steps, reported at the next verify

function step() {
  counter += 1;
  logBytes += fs.writeSync(logFd, logLine(counter));

  // Read the input through its file offset (position null), rewinding by reopening at EOF.
  let got = fs.readSync(inputFd, chunk, 0, CHUNK, null);
  if (got === 0) {
    fs.closeSync(inputFd);
    inputFd = fs.openSync(inputPath, 'r');
    inputOffset = 0;
    got = fs.readSync(inputFd, chunk, 0, CHUNK, null);
  }
  if (!chunk.subarray(0, got).equals(input.subarray(inputOffset, inputOffset + got))) {
    if (problems.length < 5) problems.push(`input read at ${inputOffset} returned wrong bytes`);
  }
  inputOffset += got;

  // Rewrite the state file in place through its file offset, wrapping by reopening without O_TRUNC.
  if (stateOffset === STATE_SIZE) {
    fs.closeSync(stateFd);
    stateFd = fs.openSync(statePath, 'r+');
    stateOffset = 0;
  }
  const rec = mirror.subarray(stateOffset, stateOffset + CHUNK);
  stateRecord(rec, counter);
  stateOffset += fs.writeSync(stateFd, rec, 0, CHUNK, null);
  w.beat(counter);
}

/** The kernel's view of an fd: {pos, flags}. */
function fdinfo(fd) {
  const text = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const field = (key, radix) => {
    const m = new RegExp(`^${key}:\\s+(\\S+)`, 'm').exec(text);
    if (m === null) throw new Error(`no ${key} in fdinfo of fd ${fd}`);
    return Number.parseInt(m[1], radix);
  };
  return { pos: field('pos', 10), flags: field('flags', 8) };
}

w.onVerify(() => {
  const found = problems.splice(0);
  const expect = (cond, what) => cond || found.push(what);
  const log = fdinfo(logFd);
  expect((log.flags & O_APPEND) !== 0, 'log fd lost O_APPEND');
  expect(
    fs.fstatSync(logFd).size === logBytes,
    `log is ${fs.fstatSync(logFd).size} B, expected ${logBytes}`,
  );
  let text = '';
  for (let n = 1; n <= counter; n++) text += logLine(n);
  expect(fs.readFileSync(logPath, 'utf8') === text, 'log contents differ from steps 1..counter');
  const inp = fdinfo(inputFd);
  expect(inp.pos === inputOffset, `input offset ${inp.pos}, expected ${inputOffset}`);
  const whole = Buffer.alloc(INPUT_SIZE);
  fs.readSync(inputFd, whole, 0, INPUT_SIZE, 0); // positional: leaves the offset alone
  expect(whole.equals(input), 'input contents changed');
  const st = fdinfo(stateFd);
  expect(st.pos === stateOffset, `state offset ${st.pos}, expected ${stateOffset}`);
  expect(fs.readFileSync(statePath).equals(mirror), 'state file differs from its in-memory mirror');
  for (const [fd, p] of [
    [logFd, logPath],
    [inputFd, inputPath],
    [stateFd, statePath],
  ]) {
    expect(fs.fstatSync(fd).ino === fs.statSync(p).ino, `fd ${fd} is no longer ${p}`);
  }
  return { checks: 11, problems: found, counter };
});
w.onCorrupt(() => {
  logBytes += 1; // the job now expects one byte more than it wrote
});

setInterval(step, Number(opts.intervalMs));
process.on('SIGTERM', () => process.exit(0));
w.ready();
if (opts.failVerify === true) w.corruptNow();
