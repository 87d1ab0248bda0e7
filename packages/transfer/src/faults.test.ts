/** Failure tests over loopback TCP: corruption, truncation, timeouts, keepalive, remote errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import { RemoteError } from '@drover/protocol';
import { TransferError } from './errors.js';
import { StreamClient, type StreamClientOptions } from './client.js';
import type { StreamServer } from './server.js';
import { expectInto, listenLocal, removeAll, tempDir, writeRandom } from './harness.js';

const MiB = 1024 * 1024;
/** Every stream test is bounded: a hang is a failure, not a stuck run. */
const T = { timeout: 30_000 };

/** One server, a source dir holding a 3 MiB + 5 file (4 DATA frames), a target dir. */
async function setup(): Promise<{
  server: StreamServer;
  src: string;
  dst: string;
  done: () => Promise<void>;
}> {
  const [src, dst] = [await tempDir('src'), await tempDir('dst')];
  const server = await listenLocal();
  await writeRandom(join(src, 'pages-1.img'), 3 * MiB + 5);
  return {
    server,
    src,
    dst,
    done: async () => {
      await server.close();
      await removeAll(src, dst);
    },
  };
}

const connect = (server: StreamServer, id: string, extra: Partial<StreamClientOptions> = {}) =>
  StreamClient.connect({ ...server.address(), migrationId: id, token: 'tok', ...extra });

/** Run the whole send; return the error it ended with (the test fails if it succeeded). */
async function sendAll(client: StreamClient, src: string): Promise<TransferError> {
  try {
    await client.sendDirectory(src);
    await client.finish();
  } catch (err) {
    assert.ok(err instanceof TransferError, `expected TransferError, got ${String(err)}`);
    return err;
  }
  assert.fail('the transfer succeeded');
}

test(
  'corruptFrameAt: receiver fails with checksum; the client gets the remote error',
  T,
  async () => {
    const { server, src, dst, done } = await setup();
    try {
      const outcome = expectInto(server, 'mig-crc', 'tok', dst);
      const client = await connect(server, 'mig-crc', { faults: { corruptFrameAt: 1 } });
      const err = await sendAll(client, src);
      const { error, totals } = await outcome;
      assert.equal(totals, undefined, 'nothing reported as done');
      assert.ok(error instanceof TransferError);
      assert.equal(error.kind, 'checksum');
      assert.equal(error.frame, 'DATA');
      assert.ok(error.offset > MiB, `offset ${error.offset} is in the 2nd DATA frame`);
      assert.equal(err.kind, 'remote');
      assert.equal(err.details.remoteKind, 'checksum');
      assert.equal(err.code, ErrorCode.InvalidArgument);
      assert.ok(err.cause instanceof RemoteError);
      // the failure sticks: later calls reject with the same first error
      await assert.rejects(client.finish(), (e) => e === err);
      await client.closed;
    } finally {
      await done();
    }
  },
);

test(
  'truncateAfterBytes: receiver fails with truncated/link and reports nothing done',
  T,
  async (t) => {
    const { server, src, dst, done } = await setup();
    try {
      const outcome = expectInto(server, 'mig-cut', 'tok', dst);
      const client = await connect(server, 'mig-cut', {
        faults: { truncateAfterBytes: 1.5 * MiB },
      });
      const err = await sendAll(client, src);
      assert.equal(err.kind, 'truncated');
      const { error, totals } = await outcome;
      assert.equal(totals, undefined, 'nothing reported as done');
      assert.ok(error instanceof TransferError);
      assert.ok(['truncated', 'link'].includes(error.kind), `kind ${error.kind}`);
      assert.equal(error.code, ErrorCode.Unavailable);
      assert.equal(error.retryable, true);
      if (error.kind === 'truncated') assert.equal(error.frame, 'DATA');
      t.diagnostic(`receiver: ${error.kind}: ${error.message}`);
      await client.closed;
    } finally {
      await done();
    }
  },
);

test('receiver idle timeout fires when the sender goes silent', T, async () => {
  const { server, dst, done } = await setup();
  try {
    const outcome = expectInto(server, 'mig-idle', 'tok', dst, { idleTimeoutMs: 200 });
    const client = await connect(server, 'mig-idle');
    const started = performance.now();
    const { error } = await outcome;
    assert.ok(performance.now() - started >= 150);
    assert.ok(error instanceof TransferError);
    assert.equal(error.kind, 'timeout');
    assert.equal(error.code, ErrorCode.Unavailable);
    await assert.rejects(client.finish(), (e: TransferError) => e.details.remoteKind === 'timeout');
  } finally {
    await done();
  }
});

test(
  'waiting for RESULT: silence times out, keepAlive PINGs keep the stream alive',
  T,
  async () => {
    const { server, src, dst, done } = await setup();
    try {
      void expectInto(server, 'mig-slow', 'tok', dst, {
        answer: async (totals, r) => {
          await sleep(900);
          await r.sendResult(totals).catch(() => {});
        },
      });
      const slow = await connect(server, 'mig-slow', { idleTimeoutMs: 300 });
      const err = await sendAll(slow, src);
      assert.equal(err.kind, 'timeout');
      assert.equal(err.retryable, true);

      await removeAll(join(dst, 'pages-1.img'));
      void expectInto(server, 'mig-alive', 'tok', dst, {
        answer: async (totals, r) => {
          const restored = await r.keepAlive(
            sleep(900).then(() => ({ job: 'restored', totals })),
            100,
          );
          await r.sendResult(restored);
        },
      });
      const alive = await connect(server, 'mig-alive', { idleTimeoutMs: 300 });
      await alive.sendDirectory(src);
      const result = await alive.finish();
      assert.deepEqual(result, { job: 'restored', totals: { files: 1, bytes: 3 * MiB + 5 } });
    } finally {
      await done();
    }
  },
);

test(
  'a receiver error (sendError or a throwing handler) reaches the client with its code',
  T,
  async () => {
    const { server, src, dst, done } = await setup();
    try {
      void expectInto(server, 'mig-refuse', 'tok', dst, {
        answer: (_totals, r) =>
          r.sendError(
            new DroverError(ErrorCode.FailedPrecondition, 'restore refused: pid in use', {
              details: { pid: 42 },
            }),
          ),
      });
      const client = await connect(server, 'mig-refuse');
      const err = await sendAll(client, src);
      assert.equal(err.code, ErrorCode.FailedPrecondition);
      assert.equal(err.message, 'restore refused: pid in use');
      assert.equal(err.kind, 'remote');
      assert.equal(err.details.pid, 42);
      assert.equal(err.retryable, false);

      await removeAll(join(dst, 'pages-1.img'));
      void expectInto(server, 'mig-throw', 'tok', dst, {
        answer: async () => {
          throw new DroverError(ErrorCode.Criu, 'restore failed', { retryable: true });
        },
      });
      const thrower = await connect(server, 'mig-throw');
      const err2 = await sendAll(thrower, src);
      assert.equal(err2.code, ErrorCode.Criu);
      assert.equal(err2.retryable, true);
    } finally {
      await done();
    }
  },
);

test('client abort reaches the receiver as a remote error', T, async () => {
  const { server, dst, done } = await setup();
  try {
    const outcome = expectInto(server, 'mig-abort', 'tok', dst);
    const client = await connect(server, 'mig-abort');
    await client.abort(new DroverError(ErrorCode.Checkpointing, 'dump failed'));
    const { error } = await outcome;
    assert.ok(error instanceof TransferError);
    assert.equal(error.kind, 'remote');
    assert.equal(error.code, ErrorCode.Checkpointing);
    assert.equal(error.message, 'dump failed');
  } finally {
    await done();
  }
});

test('sendResult never rejects: an oversize RESULT reaches the client as an ERROR', T, async () => {
  const { server, src, dst, done } = await setup();
  try {
    const delivered: boolean[] = [];
    void expectInto(server, 'mig-big-result', 'tok', dst, {
      answer: async (_totals, r) => {
        delivered.push(await r.sendResult({ blob: 'x'.repeat(5 * MiB) }));
        delivered.push(await r.sendResult({ second: true }));
      },
    });
    const client = await connect(server, 'mig-big-result');
    const err = await sendAll(client, src);
    assert.equal(err.kind, 'remote');
    assert.equal(err.details.remoteKind, 'protocol');
    assert.match(err.message, /exceeds/);
    assert.deepEqual(delivered, [false, false]);
  } finally {
    await done();
  }
});

test('throttleBytesPerSec paces the stream (test-only fault)', T, async (t) => {
  const { server, src, dst, done } = await setup();
  try {
    const outcome = expectInto(server, 'mig-slowlink', 'tok', dst);
    const client = await connect(server, 'mig-slowlink', {
      faults: { throttleBytesPerSec: 10 * MiB },
    });
    const started = performance.now();
    await client.sendDirectory(src);
    await client.finish();
    const ms = performance.now() - started;
    t.diagnostic(`3 MiB at 10 MiB/s took ${ms.toFixed(0)} ms`);
    assert.ok(ms >= 250, `took only ${ms} ms`);
    assert.deepEqual((await outcome).totals, { files: 1, bytes: 3 * MiB + 5 });
  } finally {
    await done();
  }
});
