/**
 * Reading a job's logs the way `docker logs` and `kubectl logs` do: the last bytes or lines,
 * what was written since a time, and on from an offset (following). A job writes its own
 * stdout/stderr files (no pipe through the agent: CRIU could not dump one), so lines carry no
 * time; the `LogIndex` samples each log's size every second, and "since T" starts at the size
 * the log had at the last sample before T (at most one sampling interval early, never late).
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { AgentRequest, LogChunk } from '@drover/protocol';
import { readNoFollow } from './job-dir-fs.js';
import { JobFiles } from './job-store.js';

/** What `logs` returns without `tailBytes`: the last 64 KiB. */
export const DEFAULT_TAIL_BYTES = 64 * 1024;
/** The most one `fromByte` read returns (a follower comes back for the rest). */
export const MAX_CHUNK_BYTES = 256 * 1024;
/** The most read to find the last N lines. */
const MAX_LINES_SCAN_BYTES = 1024 * 1024;

type Stream = 'stdout' | 'stderr';

/** Log sizes over time, per job and stream, sampled each second by the agent (kept in memory). */
export class LogIndex {
  private readonly samples = new Map<string, { t: number; size: number }[]>();

  /** `maxSamples` per log: past it, every other old sample is dropped (coarser history). */
  constructor(
    private readonly jobsDir: string,
    private readonly maxSamples = 4096,
  ) {}

  /** Record the size of every job's logs now (only changes are kept). */
  async sample(now = Date.now()): Promise<void> {
    let ids: string[];
    try {
      ids = await readdir(this.jobsDir);
    } catch {
      return;
    }
    const seen = new Set<string>();
    for (const id of ids) {
      for (const stream of ['stdout', 'stderr'] as const) {
        const key = `${id}/${stream}`;
        seen.add(key);
        const st = await lstat(join(this.jobsDir, id, JobFiles[stream])).catch(() => null);
        if (st === null || !st.isFile()) continue;
        this.record(key, now, st.size);
      }
    }
    for (const key of this.samples.keys()) if (!seen.has(key)) this.samples.delete(key);
  }

  /** Note that `key`'s log had `size` bytes at `t`. */
  record(key: string, t: number, size: number): void {
    const list = this.samples.get(key) ?? [];
    const last = list.at(-1);
    if (last !== undefined && last.size === size) return;
    list.push({ t, size });
    if (list.length > this.maxSamples) {
      // Thin the older half: recent history stays at full resolution.
      const half = Math.floor(list.length / 2);
      const kept = list.slice(0, half).filter((_, i) => i % 2 === 0);
      list.splice(0, half, ...kept);
    }
    this.samples.set(key, list);
  }

  /**
   * The offset from which everything was written at or after `sinceMs`: the size at the last
   * sample taken at or before it; 0 when the log had no sample that early (all of it is given).
   */
  offsetAt(jobId: string, stream: Stream, sinceMs: number): number {
    let best = 0;
    for (const s of this.samples.get(`${jobId}/${stream}`) ?? []) {
      if (s.t > sinceMs) break;
      best = s.size;
    }
    return best;
  }
}

/** Read part of job `jobId`'s log as `req` asks (never through a symlink the job planted). */
export async function readJobLog(
  jobDir: string,
  jobId: string,
  req: Omit<AgentRequest<'logs'>, 'jobId'>,
  index: LogIndex | null,
): Promise<LogChunk> {
  const stream: Stream = req.stream === 'stderr' ? 'stderr' : 'stdout';
  const path = join(jobDir, JobFiles[stream]);
  const read = async (
    opts: Parameters<typeof readNoFollow>[1],
  ): Promise<{ data: Buffer; size: number }> => {
    try {
      return await readNoFollow(path, opts);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return { data: Buffer.alloc(0), size: 0 };
    }
  };
  if (req.fromByte !== undefined) {
    const probe = await read({ maxBytes: 0 });
    // A log shorter than the offset was replaced: start again from its beginning.
    const from = req.fromByte > probe.size ? 0 : req.fromByte;
    const got = await read({ maxBytes: req.tailBytes ?? MAX_CHUNK_BYTES, from });
    const whole = wholeChars(got.data, from + got.data.length < got.size);
    return {
      data: whole.toString('utf8'),
      truncated: from + whole.length < got.size,
      sizeBytes: got.size,
      fromByte: from,
      nextByte: from + whole.length,
    };
  }
  const start =
    req.sinceMs !== undefined && index !== null ? index.offsetAt(jobId, stream, req.sinceMs) : 0;
  const limit =
    req.tailLines !== undefined
      ? Math.max(req.tailBytes ?? 0, MAX_LINES_SCAN_BYTES)
      : (req.tailBytes ?? DEFAULT_TAIL_BYTES);
  const probe = await read({ maxBytes: 0 });
  const from = Math.max(Math.min(start, probe.size), probe.size - limit);
  const got = await read({ maxBytes: limit, from });
  let data = got.data;
  let first = from;
  if (req.tailLines !== undefined) {
    const cut = lastLines(data, req.tailLines);
    first += data.length - cut.length;
    data = cut;
  }
  return {
    data: data.toString('utf8'),
    truncated: first > Math.min(start, got.size),
    sizeBytes: got.size,
    fromByte: first,
    nextByte: from + got.data.length,
  };
}

/** The last `n` lines of `buf` (a final newline ends a line, it does not start one). */
export function lastLines(buf: Buffer, n: number): Buffer {
  if (n === 0) return buf.subarray(buf.length);
  let end = buf.length;
  if (end > 0 && buf[end - 1] === 0x0a) end--;
  let at = end;
  for (let found = 0; at > 0;) {
    const i = buf.lastIndexOf(0x0a, at - 1);
    if (i < 0) {
      at = 0;
      break;
    }
    if (++found === n) {
      at = i + 1;
      break;
    }
    at = i;
  }
  return buf.subarray(at);
}

/** `buf` without a UTF-8 character cut at its end (when more follows), so offsets stay whole. */
function wholeChars(buf: Buffer, more: boolean): Buffer {
  if (!more) return buf;
  // Walk back over continuation bytes to the lead byte of the last character.
  let i = buf.length - 1;
  let cont = 0;
  while (i >= 0 && cont < 3 && (buf[i]! & 0xc0) === 0x80) {
    i--;
    cont++;
  }
  if (i < 0) return buf;
  const lead = buf[i]!;
  const need = lead >= 0xf0 ? 3 : lead >= 0xe0 ? 2 : lead >= 0xc0 ? 1 : 0;
  return need > cont ? buf.subarray(0, i) : buf;
}
