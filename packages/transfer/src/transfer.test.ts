/** End-to-end tests over loopback TCP: intact image sets, authentication, hostile senders. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readdir, stat, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode } from '@drover/common';
import { TransferError } from './errors.js';
import { FrameDecoder, encodeFrame, encodeJsonFrame, type Frame } from './frame.js';
import { StreamClient } from './client.js';
import type { StreamServer } from './server.js';
import type { TransferProgress } from './progress.js';
import {
  expectInto,
  hashTree,
  listenLocal,
  removeAll,
  sha256File,
  tempDir,
  writeRandom,
} from './harness.js';

const MiB = 1024 * 1024;
/** Every stream test is bounded: a hang is a failure, not a stuck run. */
const T = { timeout: 30_000 };

const connect = (server: StreamServer, migrationId: string, token: string) =>
  StreamClient.connect({ ...server.address(), migrationId, token });

const isRemoteAuth = (err: unknown): boolean =>
  err instanceof TransferError &&
  err.kind === 'remote' &&
  err.details.remoteKind === 'auth' &&
  err.code === ErrorCode.InvalidArgument;

/** A raw socket that writes `bytes` and collects every frame until the server closes. */
function rawExchange(server: StreamServer, bytes: Buffer): Promise<Frame[]> {
  return new Promise((resolve, reject) => {
    const decoder = new FrameDecoder();
    const frames: Frame[] = [];
    const socket = net.connect(server.address(), () => socket.write(bytes));
    socket.on('data', (chunk: Buffer) => frames.push(...decoder.push(chunk)));
    socket.on('error', reject);
    socket.on('close', () => resolve(frames));
  });
}

const hello = (migrationId: string, token: string): Buffer =>
  encodeJsonFrame('HELLO', { migrationId, token, version: 1 });

test('a directory (20 MiB random, empty, small; a subdir skipped) arrives intact', T, async () => {
  const [src, dst] = [await tempDir('src'), await tempDir('dst')];
  const server = await listenLocal();
  try {
    await writeRandom(join(src, 'pages-1.img'), 20 * MiB + 17);
    await writeFile(join(src, 'empty.img'), '');
    await writeFile(join(src, 'core-1.img'), 'core image\n');
    await mkdir(join(src, 'subdir'));
    await writeFile(join(src, 'subdir', 'nested.img'), 'not sent');
    const outcome = expectInto(server, 'mig-ok', 'tok-ok', dst);
    const reports: TransferProgress[] = [];
    const client = await StreamClient.connect({
      ...server.address(),
      migrationId: 'mig-ok',
      token: 'tok-ok',
      onProgress: (p) => reports.push(p),
    });
    const sent = await client.sendDirectory(src);
    const result = await client.finish();
    const bytes = 20 * MiB + 17 + 11;
    assert.deepEqual(result, { ok: true, totals: { files: 3, bytes } });
    assert.equal(sent.files, 3);
    assert.equal(sent.bytes, bytes);
    assert.deepEqual((await outcome).totals, { files: 3, bytes });
    assert.deepEqual(await hashTree(dst), {
      'core-1.img': await sha256File(join(src, 'core-1.img')),
      'empty.img': await sha256File(join(src, 'empty.img')),
      'pages-1.img': await sha256File(join(src, 'pages-1.img')),
    });
    assert.equal((await stat(join(dst, 'pages-1.img'))).mode & 0o777, 0o600);
    assert.ok(reports.length >= 1, 'progress reported');
    assert.equal(reports.at(-1)?.files, 3);
    assert.equal(reports.at(-1)?.bytes, bytes);
    await client.closed;
  } finally {
    await server.close();
    await removeAll(src, dst);
  }
});

test(
  'a wrong token is refused before any file is written; the right one still works once',
  T,
  async () => {
    const [src, dst] = [await tempDir('src'), await tempDir('dst')];
    const server = await listenLocal();
    try {
      await writeFile(join(src, 'a.img'), 'AAAA');
      const outcome = expectInto(server, 'mig-auth', 'right-token', dst);
      await assert.rejects(connect(server, 'mig-auth', 'wrong-token'), isRemoteAuth);
      await assert.rejects(connect(server, 'mig-other', 'right-token'), isRemoteAuth);
      // A hostile sender that pipelines a whole file behind a bad HELLO gets only an ERROR back.
      const rogue = await rawExchange(
        server,
        Buffer.concat([
          hello('mig-auth', 'right-token!'),
          encodeJsonFrame('FILE', { name: 'evil.img', size: 3, mode: 0o644 }),
          encodeFrame('DATA', Buffer.from('bad')),
        ]),
      );
      assert.deepEqual(
        rogue.map((f) => f.type),
        ['ERROR'],
      );
      assert.deepEqual(await readdir(dst), [], 'nothing written for refused senders');

      const client = await connect(server, 'mig-auth', 'right-token');
      await client.sendDirectory(src);
      assert.deepEqual(await client.finish(), { ok: true, totals: { files: 1, bytes: 4 } });
      assert.deepEqual((await outcome).totals, { files: 1, bytes: 4 });
      assert.deepEqual(await readdir(dst), ['a.img']);

      await assert.rejects(
        connect(server, 'mig-auth', 'right-token'),
        isRemoteAuth,
        'token reused',
      );
    } finally {
      await server.close();
      await removeAll(src, dst);
    }
  },
);

test(
  'cancel() withdraws an expectation; expecting the same migration twice is refused',
  T,
  async () => {
    const dst = await tempDir('dst');
    const server = await listenLocal();
    try {
      void expectInto(server, 'mig-c', 'tok', dst);
      assert.throws(() => server.expect('mig-c', 'tok2', () => {}), /already expected/);
      assert.equal(server.cancel('mig-c'), true);
      await assert.rejects(connect(server, 'mig-c', 'tok'), isRemoteAuth);
    } finally {
      await server.close();
      await removeAll(dst);
    }
  },
);

test('an authenticated sender cannot escape the target dir or break the protocol', T, async () => {
  // dst inside a private parent, so an escape via '..' would be visible (and cleaned up)
  const parent = await tempDir('parent');
  const dst = join(parent, 'dst');
  await mkdir(dst);
  const server = await listenLocal();
  try {
    const cases: Array<[string, Buffer[], RegExp]> = [
      ['traversal', [encodeJsonFrame('FILE', { name: '../escape.img', size: 0, mode: 0 })], /'\/'/],
      ['dot-dot', [encodeJsonFrame('FILE', { name: '..', size: 0, mode: 0 })], /not a file/],
      ['DATA first', [encodeFrame('DATA', Buffer.from('x'))], /DATA outside a file/],
      [
        'oversize file',
        [
          encodeJsonFrame('FILE', { name: 'f.img', size: 1, mode: 0 }),
          encodeFrame('DATA', Buffer.from('xy')),
        ],
        /more than the announced/,
      ],
      ['bad JSON', [encodeFrame('FILE', Buffer.from('{'))], /not JSON/],
    ];
    for (const [i, [label, frames, message]] of cases.entries()) {
      const outcome = expectInto(server, `mig-p${i}`, 'tok', dst);
      const reply = await rawExchange(
        server,
        Buffer.concat([hello(`mig-p${i}`, 'tok'), ...frames]),
      );
      assert.deepEqual(
        reply.map((f) => f.type),
        ['ACCEPT', 'ERROR'],
        label,
      );
      const { error } = await outcome;
      assert.ok(error instanceof TransferError, label);
      assert.equal(error.kind, 'protocol', label);
      assert.match(error.message, message, label);
    }
    // no file was created: a small file is written only once it is complete and checked
    assert.deepEqual(await readdir(dst), []);
    assert.deepEqual(await readdir(parent), ['dst'], 'nothing escaped');
  } finally {
    await server.close();
    await removeAll(parent);
  }
});

test('a connection without a HELLO in time gets a timeout ERROR and is dropped', T, async () => {
  const server = await listenLocal(undefined, 200);
  try {
    const started = performance.now();
    const reply = await rawExchange(server, Buffer.alloc(0));
    assert.ok(performance.now() - started >= 190);
    assert.deepEqual(
      reply.map((f) => f.type),
      ['ERROR'],
    );
    const failure = JSON.parse(reply[0]!.payload.toString()) as { details: { kind: string } };
    assert.equal(failure.details.kind, 'timeout');
  } finally {
    await server.close();
  }
});

test('throughput diagnostic: one 64 MiB file over loopback', T, async (t) => {
  const [src, dst] = [await tempDir('src'), await tempDir('dst')];
  const server = await listenLocal();
  try {
    await writeRandom(join(src, 'pages-big.img'), 64 * MiB);
    void expectInto(server, 'mig-big', 'tok', dst);
    const client = await connect(server, 'mig-big', 'tok');
    const started = performance.now();
    await client.sendFile(join(src, 'pages-big.img'));
    await client.finish();
    const seconds = (performance.now() - started) / 1000;
    t.diagnostic(`64 MiB in ${seconds.toFixed(2)} s = ${(64 / seconds).toFixed(0)} MiB/s`);
    assert.equal(
      await sha256File(join(dst, 'pages-big.img')),
      await sha256File(join(src, 'pages-big.img')),
    );
  } finally {
    await server.close();
    await removeAll(src, dst);
  }
});

test(
  'a stream opened ahead of its data outlives the idle timeout while the sender keeps it alive',
  T,
  async () => {
    const [src, dst] = [await tempDir('src'), await tempDir('dst')];
    const server = await listenLocal();
    try {
      await writeFile(join(src, 'a.img'), 'AAAA');
      const outcome = expectInto(server, 'mig-early', 'tok-early', dst, { idleTimeoutMs: 300 });
      const client = await connect(server, 'mig-early', 'tok-early');
      // Four idle timeouts without data (a dump while the job is frozen), PINGs every 100 ms.
      const waited = await client.keepAlive(
        new Promise<string>((r) => setTimeout(() => r('dumped'), 1200)),
        100,
      );
      assert.equal(waited, 'dumped');
      await client.sendDirectory(src);
      assert.deepEqual(await client.finish(), { ok: true, totals: { files: 1, bytes: 4 } });
      assert.deepEqual((await outcome).totals, { files: 1, bytes: 4 });
    } finally {
      await server.close();
      await removeAll(src, dst);
    }
  },
);

test('without keepalive the same wait is an idle timeout at the receiver', T, async () => {
  const [src, dst] = [await tempDir('src'), await tempDir('dst')];
  const server = await listenLocal();
  try {
    const outcome = expectInto(server, 'mig-idle', 'tok-idle', dst, { idleTimeoutMs: 300 });
    const client = await connect(server, 'mig-idle', 'tok-idle');
    const { error } = await outcome;
    assert.ok(error instanceof TransferError && error.kind === 'timeout', String(error));
    client.close();
  } finally {
    await server.close();
    await removeAll(src, dst);
  }
});

test('45 small files around a large one (read whole, sent corked) arrive intact', T, async () => {
  const [src, dst] = [await tempDir('src'), await tempDir('dst')];
  const server = await listenLocal();
  try {
    const names: string[] = [];
    for (let i = 0; i < 45; i++) {
      const name = `img-${String(i).padStart(2, '0')}.img`;
      // Up to ~270 KiB: some past a flush of the corked frames, one past SMALL_FILE_BYTES.
      await writeRandom(join(src, name), i === 30 ? 300 * 1024 : i * 6000 + 1);
      names.push(name);
    }
    await writeRandom(join(src, 'img-20-pages.img'), 3 * MiB + 5);
    const outcome = expectInto(server, 'mig-small', 'tok', dst);
    const client = await connect(server, 'mig-small', 'tok');
    const sent = await client.sendDirectory(src);
    await client.finish();
    assert.equal(sent.files, 46);
    assert.equal((await outcome).totals?.files, 46);
    assert.deepEqual(await hashTree(dst), await hashTree(src));
    assert.equal((await stat(join(dst, 'img-01.img'))).mode & 0o777, 0o600);
    await client.closed;
  } finally {
    await server.close();
    await removeAll(src, dst);
  }
});
