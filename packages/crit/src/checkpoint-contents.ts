/**
 * What is inside a checkpoint, from CRIU's image files — the work of `crit x ps`, `crit x fds`
 * and `crit x mems` in named phases: read the inventory and the process tree, the shared file
 * table, then each process (core, file descriptors, fs, memory map, pagemap), then the argv of
 * each from its dumped pages (one pass over each pages file).
 */
import type { ImageContents, ImageFd, ImageMapping, ImageProcess } from '@drover/protocol';
import { decodeImage, ImageFormatError, type Decoded } from './image-file.js';
import { PagemapFlags } from './image-schema.js';
import { describeFd, fdTypeName, mappingKind, mappingPerms } from './describe.js';

/** Where the image's files come from (a directory, or the image-set store through a key). */
export interface ImageSource {
  /** Every file of the image, with its size. */
  readonly files: ReadonlyMap<string, number>;
  /** A whole file (the small ones: everything but `pages-*.img`). */
  read(name: string): Promise<Uint8Array>;
  /** Byte ranges of a (large) file, in one pass over it; results in `ranges`' order. */
  readRanges(
    name: string,
    ranges: readonly { offset: number; length: number }[],
  ): Promise<Uint8Array[]>;
}

/** Caps that keep the result small whatever the image holds. */
export interface DecodeLimits {
  maxProcesses?: number;
  maxFilesPerProcess?: number;
  maxMappingsPerProcess?: number;
  /** Longest argv read from memory. */
  maxCmdlineBytes?: number;
}

const PAGE = 4096n;
const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v ?? 0));
const big = (v: unknown): bigint => BigInt(typeof v === 'string' || typeof v === 'number' ? v : 0);
const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** A run of dumped pages of one process. */
interface Extent {
  start: bigint;
  end: bigint;
  /** Where its pages sit in the pages file, when they are there. */
  fileOffset: number | null;
}

/** One process while it is being read. */
interface Reading {
  out: ImageProcess;
  extents: Extent[];
  pagesFile: string | null;
  argStart: bigint;
  argEnd: bigint;
}

/** Decode the checkpoint in `src`. Throws DATA_LOSS (`ImageFormatError`) on a damaged image. */
export async function decodeCheckpoint(
  src: ImageSource,
  limits: DecodeLimits = {},
): Promise<ImageContents> {
  const lim = {
    maxProcesses: limits.maxProcesses ?? 512,
    maxFilesPerProcess: limits.maxFilesPerProcess ?? 1024,
    maxMappingsPerProcess: limits.maxMappingsPerProcess ?? 2048,
    maxCmdlineBytes: limits.maxCmdlineBytes ?? 64 * 1024,
  };
  const state = { truncated: false };
  const inventory = await readInventory(src);
  const tree = await readTree(src);
  if (tree.length > lim.maxProcesses) state.truncated = true;
  const files = await readFileTable(src);
  const regName = (id: number): string | null => {
    const reg = files.get(id)?.reg as Decoded | undefined;
    return typeof reg?.name === 'string' ? reg.name : null;
  };
  const reading: Reading[] = [];
  for (const p of tree.slice(0, lim.maxProcesses)) {
    reading.push(await readProcess(src, p, files, regName, inventory, lim, state));
  }
  await readCmdlines(src, reading, lim.maxCmdlineBytes);
  let sizeBytes = 0;
  for (const size of src.files.values()) sizeBytes += size;
  return {
    imageVersion: inventory === null ? null : num(inventory.img_version),
    processes: reading.map((r) => r.out),
    truncated: state.truncated,
    sizeBytes,
  };
}

async function readOne(src: ImageSource, name: string, type: Parameters<typeof decodeImage>[2]) {
  return decodeImage(name, await src.read(name), type);
}

async function readInventory(src: ImageSource): Promise<Decoded | null> {
  if (!src.files.has('inventory.img')) return null;
  return (await readOne(src, 'inventory.img', 'inventory'))[0] ?? null;
}

async function readTree(src: ImageSource): Promise<Decoded[]> {
  if (!src.files.has('pstree.img'))
    throw new ImageFormatError('pstree.img', 'missing: this is not a CRIU checkpoint');
  return readOne(src, 'pstree.img', 'pstree');
}

/** `files.img`: every file the tree has open, by id (regular files, sockets, pipes, ...). */
async function readFileTable(src: ImageSource): Promise<Map<number, Decoded>> {
  const out = new Map<number, Decoded>();
  if (!src.files.has('files.img')) return out;
  for (const f of await readOne(src, 'files.img', 'file')) out.set(num(f.id), f);
  return out;
}

async function readProcess(
  src: ImageSource,
  p: Decoded,
  files: Map<number, Decoded>,
  regName: (id: number) => string | null,
  inventory: Decoded | null,
  lim: Required<DecodeLimits>,
  state: { truncated: boolean },
): Promise<Reading> {
  const pid = num(p.pid);
  const core = src.files.has(`core-${pid}.img`)
    ? (await readOne(src, `core-${pid}.img`, 'core'))[0]
    : undefined;
  const tc = (core?.tc ?? {}) as Decoded;
  // The task's kernel-object ids: in ids-PID.img (CRIU 4), or inside its core (older ones).
  const ids = src.files.has(`ids-${pid}.img`)
    ? ((await readOne(src, `ids-${pid}.img`, 'ids'))[0] ?? {})
    : ((core?.ids ?? {}) as Decoded);
  const out: ImageProcess = {
    pid,
    ppid: num(p.ppid),
    pgid: num(p.pgid),
    sid: num(p.sid),
    threads: Array.isArray(p.threads) ? p.threads.map(num) : [pid],
    comm: typeof tc.comm === 'string' ? tc.comm : '?',
    cmdline: null,
    exe: null,
    cwd: null,
    root: null,
    files: [],
    memory: { mappedBytes: 0, dumpedBytes: 0, mappings: [] },
  };
  out.files = await readFds(src, pid, ids, files, regName, inventory, lim, state);
  if (src.files.has(`fs-${pid}.img`)) {
    const fs = (await readOne(src, `fs-${pid}.img`, 'fs'))[0];
    if (fs) {
      out.cwd = regName(num(fs.cwd_id));
      out.root = regName(num(fs.root_id));
    }
  }
  const r: Reading = { out, extents: [], pagesFile: null, argStart: 0n, argEnd: 0n };
  await readMemory(src, r, regName, lim, state);
  return r;
}

async function readFds(
  src: ImageSource,
  pid: number,
  ids: Decoded,
  files: Map<number, Decoded>,
  regName: (id: number) => string | null,
  inventory: Decoded | null,
  lim: Required<DecodeLimits>,
  state: { truncated: boolean },
): Promise<ImageFd[]> {
  // fdinfo per file table (CLONE_FILES sharers share one) since CRIU 3; per process before.
  const perId = inventory?.fdinfo_per_id !== false && ids.files_id !== undefined;
  const name = perId ? `fdinfo-${num(ids.files_id)}.img` : `fdinfo-${pid}.img`;
  if (!src.files.has(name)) return [];
  const fds = await readOne(src, name, 'fdinfo');
  if (fds.length > lim.maxFilesPerProcess) state.truncated = true;
  return fds.slice(0, lim.maxFilesPerProcess).map((f) => {
    const id = num(f.id);
    return describeFd(num(f.fd), fdTypeName(f.type), id, files.get(id), regName);
  });
}

async function readMemory(
  src: ImageSource,
  r: Reading,
  regName: (id: number) => string | null,
  lim: Required<DecodeLimits>,
  state: { truncated: boolean },
): Promise<void> {
  const pid = r.out.pid;
  if (!src.files.has(`mm-${pid}.img`)) return; // a zombie, or a kernel thread
  const mm = (await readOne(src, `mm-${pid}.img`, 'mm'))[0] ?? {};
  r.out.exe = mm.exe_file_id !== undefined ? regName(num(mm.exe_file_id)) : null;
  r.argStart = big(mm.mm_arg_start);
  r.argEnd = big(mm.mm_arg_end);
  if (src.files.has(`pagemap-${pid}.img`)) {
    const [head, ...entries] = await readOne(src, `pagemap-${pid}.img`, 'pagemap');
    r.pagesFile = head?.pages_id !== undefined ? `pages-${num(head.pages_id)}.img` : null;
    let offset = 0;
    for (const e of entries) {
      const pages = big(e.nr_pages ?? e.compat_nr_pages);
      const start = big(e.vaddr);
      const flags = e.flags === undefined ? null : num(e.flags);
      // Images without flags (old CRIU) hold every page not in a parent image.
      const present = flags === null ? e.in_parent !== true : (flags & PagemapFlags.present) !== 0;
      r.extents.push({ start, end: start + pages * PAGE, fileOffset: present ? offset : null });
      if (present) offset += Number(pages * PAGE);
    }
  }
  const vmas = Array.isArray(mm.vmas) ? (mm.vmas as Decoded[]) : [];
  if (vmas.length > lim.maxMappingsPerProcess) state.truncated = true;
  for (const [i, v] of vmas.entries()) {
    const start = big(v.start);
    const end = big(v.end);
    const size = Number(end - start);
    const dumped = dumpedIn(r.extents, start, end);
    r.out.memory.mappedBytes += size;
    r.out.memory.dumpedBytes += dumped;
    if (i >= lim.maxMappingsPerProcess) continue;
    const mapping: ImageMapping = {
      start: hex(start),
      end: hex(end),
      sizeBytes: size,
      dumpedBytes: dumped,
      perms: mappingPerms(num(v.prot), num(v.flags)),
      what: mappingKind(num(v.status), num(v.flags), Number(big(v.shmid)), regName),
    };
    r.out.memory.mappings.push(mapping);
  }
}

/** Bytes of [start, end) whose pages the image holds. */
function dumpedIn(extents: readonly Extent[], start: bigint, end: bigint): number {
  let n = 0n;
  for (const e of extents) {
    if (e.fileOffset === null) continue;
    const lo = e.start > start ? e.start : start;
    const hi = e.end < end ? e.end : end;
    if (hi > lo) n += hi - lo;
  }
  return Number(n);
}

/**
 * Each process's argv from its dumped memory (`mm_arg_start`..`mm_arg_end`), the way
 * `/proc/PID/cmdline` reads it: the ranges of every process in a pages file are read in one
 * pass over that file.
 */
async function readCmdlines(src: ImageSource, all: Reading[], maxBytes: number): Promise<void> {
  const wanted = new Map<string, { r: Reading; pieces: { offset: number; length: number }[] }[]>();
  for (const r of all) {
    if (r.pagesFile === null || r.argEnd <= r.argStart || !src.files.has(r.pagesFile)) continue;
    const end = r.argEnd - r.argStart > BigInt(maxBytes) ? r.argStart + BigInt(maxBytes) : r.argEnd;
    const pieces: { offset: number; length: number }[] = [];
    let at = r.argStart;
    while (at < end) {
      const e = r.extents.find((x) => x.start <= at && at < x.end);
      if (!e || e.fileOffset === null) break; // not dumped: no argv from memory
      const upTo = e.end < end ? e.end : end;
      pieces.push({ offset: e.fileOffset + Number(at - e.start), length: Number(upTo - at) });
      at = upTo;
    }
    if (at < end) continue;
    const list = wanted.get(r.pagesFile) ?? [];
    list.push({ r, pieces });
    wanted.set(r.pagesFile, list);
  }
  for (const [file, list] of wanted) {
    const got = await src.readRanges(
      file,
      list.flatMap((w) => w.pieces),
    );
    let i = 0;
    for (const w of list) {
      const bytes = Buffer.concat(got.slice(i, i + w.pieces.length));
      i += w.pieces.length;
      // Each argument ends with a NUL; an empty last argument leaves two at the end.
      const text = bytes.toString('utf8');
      const body = text.endsWith('\0') ? text.slice(0, -1) : text;
      w.r.out.cmdline = body === '' ? [] : body.split('\0');
    }
  }
}
