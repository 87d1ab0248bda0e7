// Redis workload: a real redis-server child loaded with a seeded dataset through a connection that is
// then closed; verify reconnects, checks every key and value, and bumps a sequence kept in redis.
import process from 'node:process';
import { setInterval, setTimeout } from 'node:timers';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { Workload, mix32, parseArgs } from './lib/contract.mjs';
import { RespClient } from './lib/resp.mjs';

const BATCH = 1000;
const opts = parseArgs(process.argv.slice(2), {
  keys: '10000',
  seed: '1',
  redis: '/usr/bin/redis-server',
});
const keys = Number(opts.keys);
const seed = Number(opts.seed) >>> 0;
const w = new Workload('redis', opts.dir);

const keyOf = (i) => `key:${i}`;
const valueOf = (i) => `v${i}-${mix32(seed ^ i).toString(16)}-${'x'.repeat(mix32(i) % 64)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Start redis-server on `port`; resolves with the child once it accepts connections. */
async function startRedis(port) {
  const child = spawn(
    opts.redis,
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      w.dir,
      '--logfile',
      path.join(w.dir, 'redis.log'),
      '--daemonize',
      'no',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  let exited = false;
  child.once('exit', () => (exited = true));
  child.once('error', () => (exited = true));
  for (let i = 0; i < 100 && !exited; i++) {
    try {
      const c = await RespClient.connect(port);
      await c.close();
      return child;
    } catch {
      await sleep(50);
    }
  }
  child.kill('SIGKILL');
  throw new Error(`redis-server did not come up on port ${port} (see redis.log)`);
}

/** With no --port, try a few random ports in 20000-40000 (one may be taken). */
async function start() {
  for (let attempt = 0; ; attempt++) {
    const port = opts.port ? Number(opts.port) : 20000 + Math.floor(Math.random() * 20000);
    try {
      return { port, child: await startRedis(port) };
    } catch (err) {
      if (opts.port || attempt >= 4) throw err;
    }
  }
}

const { port, child } = await start();
let redisGone = undefined;
child.once('exit', (code, sig) => (redisGone = `redis-server exited (${code ?? sig})`));

const load = await RespClient.connect(port);
for (let from = 0; from < keys; from += BATCH) {
  const mset = ['MSET'];
  for (let i = from; i < Math.min(keys, from + BATCH); i++) mset.push(keyOf(i), valueOf(i));
  await load.call(mset);
}
await load.call(['SET', 'drover:seq', '0']);
await load.close(); // nothing stays connected: the job is dumped with only the listening socket

let counter = 0;
setInterval(() => w.beat(++counter), 50);

w.onVerify(async () => {
  const problems = [];
  let checks = 0;
  if (redisGone) return { checks: 1, problems: [redisGone], counter };
  const c = await RespClient.connect(port);
  try {
    const [size] = await c.call(['DBSIZE']);
    checks++;
    if (size !== keys + 1) problems.push(`DBSIZE ${size}, expected ${keys + 1}`);
    for (let from = 0; from < keys; from += BATCH) {
      const mget = ['MGET'];
      for (let i = from; i < Math.min(keys, from + BATCH); i++) mget.push(keyOf(i));
      const [values] = await c.call(mget);
      values.forEach((v, j) => {
        checks++;
        if (v !== valueOf(from + j) && problems.length < 5) {
          problems.push(`${keyOf(from + j)} = ${JSON.stringify(v)?.slice(0, 40)}`);
        }
      });
    }
    // Redis keeps its own count of verifications: it must match ours, so neither side lost state.
    const [rseq] = await c.call(['INCR', 'drover:seq']);
    checks++;
    if (rseq !== w.seq) problems.push(`redis counted ${rseq} verifications, this is ${w.seq}`);
  } finally {
    await c.close();
  }
  return { checks, problems, counter };
});
w.onCorrupt(async () => {
  const c = await RespClient.connect(port);
  await c.call(['SET', keyOf(0), 'corrupted']);
  await c.close();
});

const stop = () => {
  child.kill('SIGKILL');
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
w.ready({ port, redisPid: child.pid });
if (opts.failVerify === true) w.corruptNow();
