#!/usr/bin/env node
/**
 * The store micro-bench: image files through ObjectFiles into a JetStream object bucket as an
 * agent's `image-push` sends them (read, SHA-256 of the plaintext, sealed with AES-GCM, put), on
 * a nats-server of its own (loopback, temp dir; only its own PID is killed). Prints MB/s of each
 * upload path and its ratio to today's path, measured in the same run. Not the cluster-checkpoint
 * bench (checkpoint-bench.ts): no CRIU, no agents, one server. Asserts nothing.
 *
 * `agent-reseal` / `agent-move`: an agent's push of its local sealed image before and since the
 * push sends sealed files as they are (agentBytes).
 *
 * Usage: node test/dist/bench/store-bench.js [--images 8] [--mib 32] [--reps 3] [--cluster] [--only name,name]
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir, loadavg } from 'node:os';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';
import { openFile, rebindFile, sealFile, sealImage } from '@drover/agent';
import { Bus, ObjectFiles } from '@drover/bus';
import { mapLimit } from '@drover/common';
import { freePort } from '../util/net.js';
import { describeMachine, machineFacts } from './machine.js';
import { summarize } from './stats.js';

/** One upload path under test. */
interface StorePath {
  name: string;
  /** Sealed and hashed as the agent does, or the file's bytes as they are (the store alone). */
  sealed: boolean;
  /** Files of one image uploaded at once. */
  parallel: number;
  /** ObjectFiles' chunksInFlight (0: nats.js's own put). */
  inFlight: number;
  chunkKiB: number;
  /** Read the bytes and drop them: the agent's side alone, no store. */
  drain?: boolean;
  /**
   * From a local image sealed as a checkpoint seals it (format 2), as `image-push` sends it:
   * `reseal` opened, hashed and sealed again for the store (the push before 2026-12-07), `move`
   * sent as it is under the object's name (image-crypto.ts rebindFile, read in chunk-sized pieces).
   */
  local?: 'reseal' | 'move';
}

const PATHS: StorePath[] = [
  { name: 'today', sealed: true, parallel: 1, inFlight: 0, chunkKiB: 512 },
  { name: 'seal-only', sealed: true, parallel: 1, inFlight: 0, chunkKiB: 512, drain: true },
  { name: 'raw-stock', sealed: false, parallel: 1, inFlight: 0, chunkKiB: 512 },
  { name: 'raw-pipelined', sealed: false, parallel: 1, inFlight: 8, chunkKiB: 512 },
  { name: 'pipelined', sealed: true, parallel: 1, inFlight: 8, chunkKiB: 512 },
  { name: 'pipelined-1m', sealed: true, parallel: 1, inFlight: 8, chunkKiB: 1024 },
  { name: 'parallel-4', sealed: true, parallel: 4, inFlight: 0, chunkKiB: 512 },
  { name: 'pipelined+parallel-4', sealed: true, parallel: 4, inFlight: 8, chunkKiB: 512 },
  { name: 'pipelined-16+parallel-4', sealed: true, parallel: 4, inFlight: 16, chunkKiB: 512 },
  { name: 'agent-reseal', sealed: true, parallel: 4, inFlight: 8, chunkKiB: 512, local: 'reseal' },
  { name: 'agent-move', sealed: true, parallel: 4, inFlight: 8, chunkKiB: 512, local: 'move' },
  {
    name: 'move-only',
    sealed: true,
    parallel: 4,
    inFlight: 8,
    chunkKiB: 512,
    local: 'move',
    drain: true,
  },
  {
    name: 'reseal-only',
    sealed: true,
    parallel: 4,
    inFlight: 8,
    chunkKiB: 512,
    local: 'reseal',
    drain: true,
  },
];

/**
 * nats-server with JetStream in `dir`: one, or a 3-node cluster (the deploy default's R3 bucket).
 * Resolves once each accepts TCP; their PIDs are the only ones this bench kills.
 */
async function startServers(
  dir: string,
  cluster: boolean,
): Promise<{ urls: string[]; pids: number[] }> {
  const n = cluster ? 3 : 1;
  const ports: number[] = [];
  while (ports.length < 2 * n) {
    const p = await freePort();
    if (!ports.includes(p)) ports.push(p);
  }
  const pids: number[] = [];
  const urls: string[] = [];
  for (let i = 0; i < n; i++) {
    const args = ['-a', '127.0.0.1', '-p', String(ports[i]), '-js', '-sd', join(dir, `js${i}`)];
    if (cluster) {
      const routes = ports
        .slice(n)
        .filter((_, j) => j !== i)
        .map((p) => `nats-route://127.0.0.1:${p}`);
      args.push('-n', `n${i}`, '--cluster_name', 'bench', '--cluster');
      args.push(`nats://127.0.0.1:${ports[n + i]}`, '--routes', routes.join(','));
    }
    const child = spawn('nats-server', args, { stdio: 'ignore' });
    if (child.pid === undefined) throw new Error('nats-server did not start');
    pids.push(child.pid);
    urls.push(`nats://127.0.0.1:${ports[i]}`);
  }
  return { urls, pids };
}

/** Small files of a CRIU image beside its pages (core, mm, pagemap, files, fs, ids, …): sizes. */
const SMALL_FILES = [12, 18, 36, 81, 334, 1261, 2828, 3115, 3831, 4096, 900, 2200];

/** Image `i`'s files in `dir`: a pages file of `mib` MiB and the small ones. Returns the paths. */
async function writeImage(dir: string, i: number, mib: number): Promise<string[]> {
  const block = Buffer.alloc(1024 * 1024);
  const paths: string[] = [];
  const pages = join(dir, `img-${i}-pages-1.img`);
  const fh = await open(pages, 'w');
  for (let m = 0; m < mib; m++) {
    // Different bytes per MiB (nothing compresses them, nor needs crypto-random input).
    createHash('sha512')
      .update(`${i}/${m}`)
      .digest()
      .copy(block, (m * 64) % block.length);
    block.writeUInt32LE(m, (m * 4096) % (block.length - 4));
    await fh.write(block);
  }
  await fh.close();
  paths.push(pages);
  for (const [k, size] of SMALL_FILES.entries()) {
    const path = join(dir, `img-${i}-small-${k}.img`);
    await writeFile(path, block.subarray(0, size));
    paths.push(path);
  }
  return paths;
}

/** The name the bench's local copy of `path` is sealed under (a checkpoint's localImageName). */
const localName = (path: string): string => `local/bench/${basename(path)}`;

/** One file as the agent sends it (image-sets.ts putImageFile). */
async function* agentBytes(
  p: StorePath,
  path: string,
  object: string,
  key: Buffer,
  pieceBytes: number,
): AsyncGenerator<Uint8Array> {
  if (p.local === 'move') {
    yield* rebindFile(`${path}.sealed`, key, localName(path), object, { pieceBytes });
    return;
  }
  const source =
    p.local === 'reseal'
      ? openFile(`${path}.sealed`, key, localName(path))
      : (createReadStream(path, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>);
  if (!p.sealed) {
    yield* source;
    return;
  }
  const hash = createHash('sha256');
  async function* hashed(): AsyncGenerator<Uint8Array> {
    for await (const c of source) {
      hash.update(c);
      yield c;
    }
  }
  yield* sealImage(hashed(), key, object);
  hash.digest('hex');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      images: { type: 'string', default: '8' },
      mib: { type: 'string', default: '32' },
      only: { type: 'string' },
      reps: { type: 'string', default: '3' },
      cluster: { type: 'boolean', default: false },
    },
  });
  const images = Number(values.images);
  const mib = Number(values.mib);
  const only = values.only?.split(',');
  const reps = Math.max(1, Number(values.reps));
  const cluster = values.cluster;
  const dir = await mkdtemp(join(tmpdir(), 'drover-store-bench-'));
  const servers = await startServers(dir, cluster);
  let bus: Bus | null = null;
  try {
    const imageFiles: string[][] = [];
    for (let i = 0; i < images; i++) imageFiles.push(await writeImage(dir, i, mib));
    let bytes = 0;
    for (const path of imageFiles.flat()) bytes += (await stat(path)).size;
    for (let i = 0; bus === null; i++) {
      try {
        bus = await Bus.connect({ servers: servers.urls.slice(0, 1), name: 'store-bench' });
      } catch (err) {
        if (i > 100) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    // A cluster places the R3 bucket once it has a meta leader.
    for (let i = 0; ; i++) {
      try {
        await ObjectFiles.open(bus, { bucket: 'bench', create: true, replicas: cluster ? 3 : 1 });
        break;
      } catch (err) {
        if (i > 100) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const key = Buffer.alloc(32, 7);
    // Each file's local sealed copy, as a checkpoint leaves it (for the `local` paths).
    for (const path of imageFiles.flat())
      await sealFile(path, `${path}.sealed`, key, localName(path));
    console.log(
      `store micro-bench: ${images} images (pages ${mib} MiB + ${SMALL_FILES.length} small ` +
        `files each, ${(bytes / 1e6).toFixed(1)} MB), one at a time, ` +
        (cluster ? 'a 3-node nats-server cluster (R3 bucket)' : 'one nats-server') +
        ' on loopback',
    );
    console.log(describeMachine(machineFacts()));
    console.log(
      `load before: ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
    const serverCpuMs = (): number => {
      let ms = 0;
      for (const pid of servers.pids) {
        // utime + stime, fields 14 and 15 of /proc/PID/stat, in clock ticks (100 per second).
        const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
        ms += (Number(f[11]) + Number(f[12])) * 10;
      }
      return ms;
    };
    const cpu = new Map<string, { bench: number; server: number }>();
    const run = async (p: StorePath): Promise<number> => {
      const c0 = process.cpuUsage();
      const s0 = serverCpuMs();
      const store = await ObjectFiles.open(bus!, {
        bucket: 'bench',
        create: true,
        replicas: cluster ? 3 : 1,
        chunkBytes: p.chunkKiB * 1024,
        chunksInFlight: p.inFlight,
      });
      const t0 = performance.now();
      for (const [i, paths] of imageFiles.entries()) {
        await mapLimit(paths, p.parallel, async (path, k) => {
          const object = `set/job-${i}/${k}`;
          const sent = agentBytes(p, path, object, key, store.chunkBytes);
          if (p.drain) for await (const _ of sent);
          else await store.put(object, sent);
        });
      }
      const mbs = bytes / 1e6 / ((performance.now() - t0) / 1000);
      const c = process.cpuUsage(c0);
      const acc = cpu.get(p.name) ?? { bench: 0, server: 0 };
      acc.bench += (c.user + c.system) / 1000;
      acc.server += serverCpuMs() - s0;
      cpu.set(p.name, acc);
      await store.deletePrefix('set/');
      return mbs;
    };
    // Interleaved: rep 1 of every path, then rep 2, … so the machine's load falls on all alike.
    const paths = PATHS.filter((p) => !only || only.includes(p.name) || p.name === 'today');
    const results = new Map<string, number[]>(paths.map((p) => [p.name, []]));
    for (let r = 0; r < reps; r++) {
      for (const p of paths) results.get(p.name)!.push(await run(p));
    }
    const base = summarize(results.get('today')!).median;
    console.log(
      `MB/s, median of ${reps} (all runs); CPU ms per MB of this process (all its threads) ` +
        `and of nats-server`,
    );
    for (const p of paths) {
      const xs = results.get(p.name)!;
      const mbs = summarize(xs).median;
      const c = cpu.get(p.name)!;
      const perMb = (ms: number): string => (ms / reps / (bytes / 1e6)).toFixed(1);
      console.log(
        `${p.name.padEnd(24)} ${mbs.toFixed(1).padStart(6)} MB/s  ×${(mbs / base).toFixed(2)} vs today  ` +
          `(${xs.map((x) => x.toFixed(0)).join(' ')})  cpu ${perMb(c.bench)}+${perMb(c.server)} ` +
          `ms/MB  sealed ${p.sealed}${p.local ? ` (local: ${p.local})` : ''}, files at once ` +
          `${p.parallel}, in flight ${p.inFlight || 'stock put'}, chunk ${p.chunkKiB} KiB`,
      );
    }
    console.log(
      `load after:  ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
  } finally {
    await bus?.close().catch(() => undefined);
    for (const pid of servers.pids) process.kill(pid, 'SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
