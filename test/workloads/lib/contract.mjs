// The workload contract for Node workloads: arguments, the ready file, heartbeats, verdicts and the
// history checks that catch a restore that lost state (see ../README.md).
import process from 'node:process';
import fs from 'node:fs';
import path from 'node:path';

/**
 * Parse `--key value` and bare `--flag` arguments into an object (`--fail-verify` → failVerify).
 * @param {string[]} argv
 * @param {Record<string, string | boolean>} defaults
 */
export function parseArgs(argv, defaults) {
  const out = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const key = a.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) out[key] = true;
    else out[key] = argv[++i];
  }
  if (typeof out.dir !== 'string') throw new Error('--dir <workdir> is required');
  return out;
}

/** Write `file` atomically: a temp file in the same directory, then rename. */
export function writeAtomic(file, text) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

/** Read and parse a JSON file, or undefined when it does not exist. */
export function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * One workload's side of the contract. Call `ready()` once set up, `beat(counter)` on every step;
 * `onVerify(fn)` registers the verifier (sync or async, returning {checks, problems, counter}) run
 * on SIGUSR1, `onCorrupt(fn)` the deliberate corruption run on SIGUSR2 (and once after setup with
 * --fail-verify).
 */
export class Workload {
  /** @param {string} name @param {string} dir */
  constructor(name, dir) {
    this.name = name;
    this.dir = path.resolve(dir);
    this.seq = 0;
    this.startedAt = Date.now();
    this.hb = fs.openSync(path.join(this.dir, 'heartbeat.log'), 'a');
    this.busy = Promise.resolve();
  }

  /** Append one heartbeat line (a single write on an O_APPEND fd). */
  beat(counter) {
    fs.writeSync(this.hb, `{"t":${Date.now()},"n":${counter}}\n`);
  }

  /** Announce that setup is done; also installs the signal handlers. */
  ready(extra = {}) {
    process.on('SIGUSR1', () => this.#queue(() => this.#verify()));
    process.on('SIGUSR2', () => this.#queue(async () => this.#corrupt()));
    // CRIU cannot dump io_uring. These workloads do only synchronous fs calls, so libuv never sets
    // one up; say so loudly if that ever changes (the client also starts us with UV_USE_IO_URING=0).
    const uring = fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`).includes('io_uring');
      } catch {
        return false;
      }
    });
    if (uring.length > 0)
      process.stderr.write(`${this.name}: io_uring fds ${uring}: CRIU will refuse\n`);
    const info = { pid: process.pid, name: this.name, startedAt: this.startedAt, ...extra };
    writeAtomic(path.join(this.dir, 'ready'), JSON.stringify(info) + '\n');
  }

  onVerify(fn) {
    this.verifier = fn;
  }

  onCorrupt(fn) {
    this.corrupt = fn;
  }

  // Requests are serialised so two quick SIGUSR1s give two verdicts in order.
  #queue(fn) {
    this.busy = this.busy.then(fn).catch((err) => {
      process.stderr.write(`${this.name}: ${err?.stack ?? err}\n`);
    });
  }

  /** Corrupt state on purpose, then acknowledge in `<workdir>/corrupted` so the caller can go on. */
  async #corrupt() {
    await this.corrupt();
    this.corruptions = (this.corruptions ?? 0) + 1;
    const ack = { n: this.corruptions, at: Date.now() };
    writeAtomic(path.join(this.dir, 'corrupted'), JSON.stringify(ack) + '\n');
  }

  /** Corrupt now (what --fail-verify does right after `ready()`). */
  corruptNow() {
    this.#queue(() => this.#corrupt());
  }

  async #verify() {
    this.seq += 1;
    const seq = this.seq;
    let result;
    try {
      result = await this.verifier();
    } catch (err) {
      result = { checks: 1, problems: [`verifier threw: ${err?.message ?? err}`] };
    }
    const problems = [...result.problems];
    let checks = result.checks;
    if (result.counter !== undefined) {
      const h = checkHistory(this.dir, result.counter, seq);
      checks += h.checks;
      problems.push(...h.problems);
    }
    const verdict = {
      ok: problems.length === 0,
      name: this.name,
      seq,
      checks,
      details: problems.length === 0 ? `${checks} checks passed` : problems.slice(0, 10).join('; '),
      ...(result.counter !== undefined ? { counter: result.counter } : {}),
      at: Date.now(),
    };
    writeAtomic(path.join(this.dir, 'verdict.json'), JSON.stringify(verdict) + '\n');
  }
}

/**
 * Compare in-memory progress with what this job already wrote to disk: every heartbeat and the last
 * verdict must be at or behind `counter` and `seq`. A restore from an older image (or a fresh start
 * pretending to be the job) has fallen behind its own history and fails here.
 */
export function checkHistory(dir, counter, seq) {
  const problems = [];
  let checks = 0;
  let text = '';
  try {
    text = fs.readFileSync(path.join(dir, 'heartbeat.log'), 'utf8');
  } catch {
    problems.push('heartbeat.log is missing');
  }
  let prev = -1;
  let lineNo = 0;
  for (const line of text.split('\n')) {
    lineNo++;
    if (line === '') continue;
    let n;
    try {
      n = JSON.parse(line).n;
    } catch {
      continue; // a torn last line after a kill is not a state problem
    }
    checks++;
    if (n < prev) problems.push(`heartbeat line ${lineNo} went backwards (${n} after ${prev})`);
    if (n > counter) problems.push(`heartbeat line ${lineNo} has n=${n} > counter ${counter}`);
    prev = Math.max(prev, n);
    if (problems.length > 5) break;
  }
  const last = readJson(path.join(dir, 'verdict.json'));
  if (last !== undefined) {
    checks++;
    if (!(last.seq < seq)) problems.push(`previous verdict seq ${last.seq} >= this seq ${seq}`);
    if (last.counter !== undefined && last.counter > counter) {
      problems.push(`previous verdict counter ${last.counter} > counter ${counter}`);
    }
  }
  return { checks, problems };
}

/** 32-bit integer hash (lowbias32); the building block of every seeded pattern here. */
export function mix32(x) {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Small seeded PRNG (xorshift32) for choosing what to mutate next. */
export function xorshift32(seed) {
  let s = mix32(seed) || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}
