import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDroverError } from '@drover/common';
import { decodeCheckpoint, type ImageSource } from './checkpoint-contents.js';
import { decodeImage, encodeImage, type Decoded } from './image-file.js';
import { PagemapFlags, VmaStatus } from './image-schema.js';

/** An image held in memory; counts how often the pages file is read. */
function memorySource(files: Record<string, Uint8Array>): ImageSource & { rangeReads: number } {
  const src = {
    rangeReads: 0,
    files: new Map(Object.entries(files).map(([k, v]) => [k, v.byteLength])),
    read: async (name: string) => {
      const f = files[name];
      if (!f) throw new Error(`no ${name}`);
      return f;
    },
    readRanges: async (name: string, ranges: readonly { offset: number; length: number }[]) => {
      src.rangeReads++;
      const f = files[name]!;
      return ranges.map((r) => f.subarray(r.offset, r.offset + r.length));
    },
  };
  return src;
}

const le = (bytes: number[]): number => Buffer.from(bytes).readUInt32LE(0);

/** A two-process tree: a shell (pid 1) and its child (pid 7) with a file, sockets and memory. */
function sampleImage(): Record<string, Uint8Array> {
  const argv = Buffer.from('redis-server\0--save\0\0--port\x006379\0\0');
  const pages = Buffer.alloc(3 * 4096);
  // The third dumped page (the code page, then the stack's two), at its offset in the page.
  argv.copy(pages, 2 * 4096 + 16);
  const argStart = 0x7ffd0000n + 16n;
  return {
    'inventory.img': encodeImage('inventory', [{ img_version: 2, fdinfo_per_id: true }]),
    'pstree.img': encodeImage('pstree', [
      { pid: 1, ppid: 0, pgid: 1, sid: 1, threads: [1] },
      { pid: 7, ppid: 1, pgid: 1, sid: 1, threads: [7, 8] },
    ]),
    'core-1.img': encodeImage('core', [{ mtype: 1, tc: { comm: 'tini' } }]),
    'core-7.img': encodeImage('core', [{ mtype: 1, tc: { comm: 'redis-server' } }]),
    'ids-1.img': encodeImage('ids', [{ vm_id: 1, files_id: 10, fs_id: 1, sighand_id: 1 }]),
    'ids-7.img': encodeImage('ids', [{ vm_id: 2, files_id: 11, fs_id: 2, sighand_id: 2 }]),
    'files.img': encodeImage('file', [
      { type: 1, id: 100, reg: { id: 100, flags: 0, pos: 12, name: '/srv/data.rdb', size: 40 } },
      { type: 1, id: 101, reg: { id: 101, flags: 0, pos: 0, name: '/usr/bin/redis-server' } },
      { type: 1, id: 102, reg: { id: 102, flags: 0, pos: 0, name: '/srv' } },
      { type: 1, id: 103, reg: { id: 103, flags: 0, pos: 0, name: '/' } },
      {
        type: 4,
        id: 200,
        isk: {
          id: 200,
          ino: 5,
          family: 2,
          type: 1,
          proto: 6,
          state: 10,
          src_port: 6379,
          dst_port: 0,
          src_addr: [le([10, 77, 3, 11])],
        },
      },
      {
        type: 4,
        id: 201,
        isk: {
          id: 201,
          ino: 6,
          family: 10,
          type: 2,
          proto: 17,
          state: 7,
          src_port: 53,
          dst_port: 0,
          src_addr: [0, 0, 0, le([0, 0, 0, 1])],
        },
      },
      {
        type: 5,
        id: 202,
        usk: { id: 202, ino: 9, type: 1, state: 1, peer: 10, name: Buffer.from('\0redis-ctl') },
      },
      { type: 2, id: 203, pipe: { id: 203, pipe_id: 4242, flags: 0 } },
    ]),
    'fdinfo-10.img': encodeImage('fdinfo', [{ id: 203, flags: 0, type: 2, fd: 0 }]),
    'fdinfo-11.img': encodeImage('fdinfo', [
      { id: 100, flags: 0, type: 1, fd: 3 },
      { id: 200, flags: 0, type: 4, fd: 4 },
      { id: 201, flags: 0, type: 4, fd: 5 },
      { id: 202, flags: 0, type: 5, fd: 6 },
      { id: 999, flags: 0, type: 6, fd: 7 },
    ]),
    'fs-7.img': encodeImage('fs', [{ cwd_id: 102, root_id: 103 }]),
    'mm-7.img': encodeImage('mm', [
      {
        mm_arg_start: String(argStart),
        mm_arg_end: String(argStart + BigInt(argv.length)),
        exe_file_id: 101,
        vmas: [
          {
            start: '4194304',
            end: String(4194304 + 8192),
            pgoff: 0,
            shmid: 101,
            prot: 5,
            flags: 2,
            status: VmaStatus.regular | VmaStatus.filePrivate,
            fd: -1,
          },
          {
            start: String(0x7ffd0000n - 4096n),
            end: String(0x7ffd0000n + 4096n),
            pgoff: 0,
            shmid: 0,
            prot: 3,
            flags: 0x0122,
            status: VmaStatus.regular | VmaStatus.stack | VmaStatus.anonPrivate,
            fd: -1,
          },
          {
            start: String(0xffffffffff600000n),
            end: String(0xffffffffff601000n),
            pgoff: 0,
            shmid: 0,
            prot: 4,
            flags: 0x22,
            status: VmaStatus.regular | VmaStatus.vsyscall,
            fd: -1,
          },
        ],
      },
    ]),
    'pagemap-7.img': encodeImage('pagemap', [
      { pages_id: 3 },
      // One code page dumped, one in a parent image (not here), then the two stack pages.
      { vaddr: '4194304', compat_nr_pages: 1, nr_pages: 1, flags: PagemapFlags.present },
      {
        vaddr: String(4194304 + 4096),
        compat_nr_pages: 1,
        nr_pages: 1,
        flags: PagemapFlags.parent,
      },
      {
        vaddr: String(0x7ffd0000n - 4096n),
        compat_nr_pages: 2,
        nr_pages: 2,
        flags: PagemapFlags.present,
      },
    ]),
    'pages-3.img': pages,
  };
}

test('decodes the process tree, commands, files, sockets and memory of a checkpoint', async () => {
  const src = memorySource(sampleImage());
  const c = await decodeCheckpoint(src);
  assert.equal(c.imageVersion, 2);
  assert.equal(c.truncated, false);
  assert.deepEqual(
    c.processes.map((p) => [p.pid, p.ppid, p.comm]),
    [
      [1, 0, 'tini'],
      [7, 1, 'redis-server'],
    ],
  );
  const redis = c.processes[1]!;
  assert.deepEqual(redis.threads, [7, 8]);
  // argv from the dumped stack page: the empty argument is kept.
  assert.deepEqual(redis.cmdline, ['redis-server', '--save', '', '--port', '6379', '']);
  assert.equal(src.rangeReads, 1);
  assert.equal(redis.exe, '/usr/bin/redis-server');
  assert.equal(redis.cwd, '/srv');
  assert.equal(redis.root, '/');
  assert.deepEqual(
    redis.files.map((f) => [f.fd, f.type, f.description]),
    [
      [3, 'REG', '/srv/data.rdb'],
      [4, 'INETSK', 'tcp 10.77.3.11:6379 LISTEN'],
      [5, 'INETSK', 'udp6 [::1]:53 unconnected'],
      [6, 'UNIXSK', 'unix stream @redis-ctl connected peer 10'],
      [7, 'EVENTFD', 'eventfd.999'],
    ],
  );
  assert.equal(redis.files[0]!.pos, 12);
  assert.equal(redis.files[0]!.size, 40);
  assert.equal(c.processes[0]!.files[0]!.description, 'pipe[4242]');
  const m = redis.memory;
  assert.deepEqual(
    m.mappings.map((x) => [x.start, x.perms, x.sizeBytes, x.dumpedBytes, x.what]),
    [
      ['0x400000', 'r-xp', 8192, 4096, '/usr/bin/redis-server'],
      ['0x7ffcf000', 'rw-p', 8192, 8192, '[stack]'],
      ['0xffffffffff600000', '--xp', 4096, 0, '[vsyscall]'],
    ],
  );
  assert.equal(m.mappedBytes, 8192 + 8192 + 4096);
  assert.equal(m.dumpedBytes, 4096 + 8192);
  // A process whose memory map was not dumped (here: tini's) has none, not an error.
  assert.equal(c.processes[0]!.cmdline, null);
});

test('limits cut long lists and say so', async () => {
  const c = await decodeCheckpoint(memorySource(sampleImage()), {
    maxFilesPerProcess: 2,
    maxMappingsPerProcess: 1,
    maxProcesses: 1,
  });
  assert.equal(c.truncated, true);
  assert.equal(c.processes.length, 1);
  const full = await decodeCheckpoint(memorySource(sampleImage()), { maxMappingsPerProcess: 1 });
  assert.equal(full.processes[1]!.memory.mappings.length, 1);
  // Totals still count every mapping.
  assert.equal(full.processes[1]!.memory.mappedBytes, 20480);
});

test('argv whose pages were not dumped stays unknown', async () => {
  const files = sampleImage();
  files['pagemap-7.img'] = encodeImage('pagemap', [
    { pages_id: 3 },
    { vaddr: '4194304', compat_nr_pages: 1, nr_pages: 1, flags: PagemapFlags.present },
  ]);
  const c = await decodeCheckpoint(memorySource(files));
  assert.equal(c.processes[1]!.cmdline, null);
});

test('damaged images are refused as DATA_LOSS, naming the file', async () => {
  const files = sampleImage();
  files['core-7.img'] = files['mm-7.img']!; // the wrong magic
  await assert.rejects(
    decodeCheckpoint(memorySource(files)),
    (e: unknown) => isDroverError(e, 'DATA_LOSS') && /core-7\.img: magic/.test(e.message),
  );
  const cut = sampleImage();
  cut['pstree.img'] = cut['pstree.img']!.subarray(0, cut['pstree.img']!.byteLength - 3);
  await assert.rejects(
    decodeCheckpoint(memorySource(cut)),
    (e: unknown) => isDroverError(e, 'DATA_LOSS') && /pstree\.img: entry of/.test(e.message),
  );
  const { ['pstree.img']: _gone, ...noTree } = sampleImage();
  await assert.rejects(
    decodeCheckpoint(memorySource(noTree)),
    (e: unknown) => isDroverError(e, 'DATA_LOSS') && /not a CRIU checkpoint/.test(e.message),
  );
});

test('image files round-trip through encode and decode', () => {
  const entries: Decoded[] = [{ pid: 1, ppid: 0, pgid: 1, sid: 1, threads: [1, 2] }];
  assert.deepEqual(decodeImage('pstree.img', encodeImage('pstree', entries), 'pstree'), entries);
});
