/**
 * CRIU's statistics images (`stats-dump`, `stats-restore`) and the page images of an
 * images directory: what a dump says it wrote, and what arrived, for completeness checks.
 * Field numbers are the facts of CRIU's `images/stats.proto`.
 */
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { DroverError, ErrorCode } from '@drover/common';

const PROTO = `
syntax = "proto2";
message dump_stats_entry {
  required uint32 freezing_time = 1;
  required uint32 frozen_time = 2;
  required uint32 memdump_time = 3;
  required uint32 memwrite_time = 4;
  required uint64 pages_scanned = 5;
  required uint64 pages_skipped_parent = 6;
  required uint64 pages_written = 7;
  optional uint32 irmap_resolve = 8;
  required uint64 pages_lazy = 9;
  optional uint64 page_pipes = 10;
  optional uint64 page_pipe_bufs = 11;
  optional uint64 shpages_scanned = 12;
  optional uint64 shpages_skipped_parent = 13;
  optional uint64 shpages_written = 14;
}
message restore_stats_entry {
  required uint64 pages_compared = 1;
  required uint64 pages_skipped_cow = 2;
  required uint32 forking_time = 3;
  required uint32 restore_time = 4;
  optional uint64 pages_restored = 5;
}
message stats_entry {
  optional dump_stats_entry dump = 1;
  optional restore_stats_entry restore = 2;
}
`;
const StatsEntry = protobuf.parse(PROTO, { keepCase: true }).root.lookupType('stats_entry');

/** `IMG_SERVICE_MAGIC` then `STATS_MAGIC` head a statistics image (criu/include/magic.h). */
const IMG_SERVICE_MAGIC = 0x55105940;
const STATS_MAGIC = 0x57093306;

/** What a dump reports about memory. */
export interface DumpStats {
  /** Private memory pages written (to the images or to a page server). */
  pagesWritten: number;
  /** Shared memory pages written. */
  shpagesWritten: number;
  /** Pages left for lazy restore (post-copy). */
  pagesLazy: number;
  /** Milliseconds the tree was frozen, by CRIU's own clock. */
  frozenMs: number;
}

/** The dump statistics CRIU wrote into `dir` (`stats-dump`). */
export async function readDumpStats(dir: string): Promise<DumpStats> {
  const path = join(dir, 'stats-dump');
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (err) {
    throw new DroverError(ErrorCode.DataLoss, `no dump statistics in ${dir}`, {
      cause: err,
      details: { path },
    });
  }
  const bad = (why: string): never => {
    throw new DroverError(ErrorCode.DataLoss, `${path}: ${why}`, { details: { path } });
  };
  if (buf.length < 12) bad('too short');
  if (buf.readUInt32LE(0) !== IMG_SERVICE_MAGIC || buf.readUInt32LE(4) !== STATS_MAGIC)
    bad('not a CRIU statistics image');
  const size = buf.readUInt32LE(8);
  if (buf.length < 12 + size) bad('cut short');
  const entry = StatsEntry.toObject(StatsEntry.decode(buf.subarray(12, 12 + size)), {
    longs: Number,
  }) as { dump?: Record<string, number> };
  const d = entry.dump ?? bad('no dump statistics in it');
  return {
    pagesWritten: d['pages_written'] ?? 0,
    shpagesWritten: d['shpages_written'] ?? 0,
    pagesLazy: d['pages_lazy'] ?? 0,
    frozenMs: Math.round((d['frozen_time'] ?? 0) / 1000),
  };
}

/**
 * Write a dump statistics image as CRIU does (the pair of {@link readDumpStats}: a fault
 * injection or a test can describe a dump without running one).
 */
export async function writeDumpStats(dir: string, stats: DumpStats): Promise<void> {
  const body = StatsEntry.encode(
    StatsEntry.fromObject({
      dump: {
        freezing_time: 0,
        frozen_time: stats.frozenMs * 1000,
        memdump_time: 0,
        memwrite_time: 0,
        pages_scanned: stats.pagesWritten,
        pages_skipped_parent: 0,
        pages_written: stats.pagesWritten,
        pages_lazy: stats.pagesLazy,
        shpages_written: stats.shpagesWritten,
      },
    }),
  ).finish();
  const head = Buffer.alloc(12);
  head.writeUInt32LE(IMG_SERVICE_MAGIC, 0);
  head.writeUInt32LE(STATS_MAGIC, 4);
  head.writeUInt32LE(body.length, 8);
  await writeFile(join(dir, 'stats-dump'), Buffer.concat([head, body]));
}

/** Bytes of page data in `dir` (`pages-*.img`: raw 4 KiB pages, private and shared). */
export async function pageBytes(dir: string): Promise<number> {
  let total = 0;
  for (const f of await readdir(dir)) {
    if (f.startsWith('pages-') && f.endsWith('.img')) total += (await stat(join(dir, f))).size;
  }
  return total;
}

/** The page size CRIU's page images are counted in. */
export const PAGE_SIZE = 4096;
