/** Unit tests of FrameChannel's corking: frames held back leave together, in order. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { nullLogger } from '@drover/common';
import { FrameChannel } from './channel.js';
import { FrameDecoder, type Frame } from './frame.js';

/** A channel over a loopback connection, the frames its peer decodes, and its socket's writes. */
async function pair(): Promise<{
  channel: FrameChannel;
  writes: () => number;
  received: (n: number) => Promise<Frame[]>;
  close: () => void;
}> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const accepted = once(server, 'connection');
  const socket = net.connect({ host: '127.0.0.1', port });
  await once(socket, 'connect');
  const [peer] = (await accepted) as [net.Socket];
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  peer.on('data', (chunk: Buffer) => frames.push(...decoder.push(chunk)));
  // Every call that hands bytes to the kernel: `_write` for one chunk, `_writev` for several.
  let writes = 0;
  const s = socket as unknown as Record<'_write' | '_writev', (...a: unknown[]) => unknown>;
  for (const m of ['_write', '_writev'] as const) {
    const orig = s[m].bind(socket);
    s[m] = (...a: unknown[]) => {
      writes++;
      return orig(...a);
    };
  }
  return {
    channel: new FrameChannel(socket, nullLogger),
    writes: () => writes,
    received: async (n) => {
      while (frames.length < n) await once(peer, 'data');
      return frames;
    },
    close: () => {
      socket.destroy();
      peer.destroy();
      server.close();
    },
  };
}

test('corked frames leave in one write, in order, once flushed', async () => {
  const p = await pair();
  try {
    p.channel.cork();
    p.channel.cork(); // one level: a single flush releases everything
    for (let i = 0; i < 20; i++) await p.channel.sendJson('FILE', { i }, 1000);
    assert.equal(p.writes(), 0, 'nothing written while corked');
    assert.ok(p.channel.queuedBytes > 0);
    p.channel.flush();
    assert.equal(p.writes(), 1, 'twenty frames, one write');
    const frames = await p.received(20);
    assert.deepEqual(
      frames.map((f) => (JSON.parse(f.payload.toString()) as { i: number }).i),
      [...Array(20).keys()],
    );
  } finally {
    p.close();
  }
});

test('uncorked, each frame is its own write', async () => {
  const p = await pair();
  try {
    for (let i = 0; i < 5; i++) await p.channel.sendJson('FILE', { i }, 1000);
    assert.equal(p.writes(), 5);
    assert.equal((await p.received(5)).length, 5);
  } finally {
    p.close();
  }
});
