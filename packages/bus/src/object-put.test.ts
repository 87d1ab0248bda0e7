/**
 * Tests for the pipelined object upload against a real nats-server: what it writes, nats.js's
 * stock ObjectStore reads back unchanged (bytes, digest, chunk layout); uploads run side by side;
 * a failure half-way leaves no object and a typed error.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Objm } from '@nats-io/obj';
import { isDroverError, mapLimit } from '@drover/common';
import { ObjectFiles } from './object-files.js';
import { putPipelined } from './object-put.js';
import { startTestNats, type TestNats } from './test-nats.js';

let nats: TestNats;
const CHUNK = 64 * 1024;

before(async () => {
  nats = await startTestNats('object-put-test');
});

after(async () => {
  await nats?.stop();
});

/** `data` in pieces of `size` bytes (the last shorter), as a stream. */
async function* pieces(data: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

/** The object as nats.js's own ObjectStore reads it: bytes, its record, and the read's error. */
async function stockGet(bucket: string, name: string) {
  const os = await new Objm(jetstream(nats.bus.nc)).open(bucket);
  const info = await os.info(name);
  const res = await os.get(name);
  assert.ok(info && res, `stock get found no ${name}`);
  const data = await collect(res.data as unknown as AsyncIterable<Uint8Array>);
  return { data, info, error: await res.error };
}

/** Bucket `name` (created), CHUNK-sized chunks, `inFlight` of them at once (0: nats.js's put). */
function bucket(name: string, inFlight: number, timeoutMs?: number): Promise<ObjectFiles> {
  return ObjectFiles.open(nats.bus, {
    bucket: name,
    create: true,
    chunkBytes: CHUNK,
    chunksInFlight: inFlight,
    ...(timeoutMs ? { timeoutMs } : {}),
  });
}

const SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 333];

test('files of 0, 1, chunk-1, chunk, chunk+1 and several chunks read back with the stock get', async () => {
  const store = await bucket('pipelined', 3);
  for (const size of SIZES) {
    const data = randomBytes(size);
    // Input pieces that straddle chunk edges, and pieces of whole chunks (sent as views).
    for (const piece of [7919, CHUNK * 2]) {
      const name = `set/job/file-${size}-${piece}.img`;
      const put = await store.put(name, pieces(data, piece));
      const digest = `SHA-256=${createHash('sha256').update(data).digest('base64url')}`;
      assert.equal(put.size, size);
      assert.equal(put.digest.replace(/=+$/, ''), digest);
      const stock = await stockGet('pipelined', name);
      assert.ok(!stock.error, `stock get of ${name}: ${String(stock.error)}`);
      assert.ok(stock.data.equals(data), `${name}: bytes differ`);
      assert.equal(stock.info.size, size);
      assert.equal(stock.info.chunks, Math.ceil(size / CHUNK));
      assert.equal(stock.info.digest, put.digest);
      assert.equal(stock.info.options?.max_chunk_size, CHUNK);
      assert.ok((await collect(store.get(name))).equals(data), `${name}: our get differs`);
    }
  }
});

test('the record and chunks are laid out as nats.js lays them out (same fields, same chunking)', async () => {
  const data = randomBytes(3 * CHUNK + 10);
  const ours = await bucket('layout', 4);
  const stock = await bucket('layout', 0);
  await ours.put('ours', pieces(data, 1000));
  await stock.put('stock', pieces(data, 1000));
  // The records as stored: the same keys in the same order, the same values but for the
  // name, the nuid and the time.
  const jsm = await jetstreamManager(nats.bus.nc);
  const record = async (name: string): Promise<Record<string, unknown>> => {
    // nats.js's padded base64url of the name.
    const b64 = Buffer.from(name).toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
    const subj = `$O.layout.M.${b64}`;
    const m = await jsm.streams.getMessage('OBJ_layout', { last_by_subj: subj });
    assert.ok(m, `no record of ${name}`);
    assert.equal(m.header?.get('Nats-Rollup'), 'sub');
    return m.json<Record<string, unknown>>();
  };
  const [a, b] = [await record('ours'), await record('stock')];
  assert.deepEqual(Object.keys(a), Object.keys(b));
  const strip = (o: Record<string, unknown>) => ({ ...o, name: '', nuid: '', mtime: '' });
  assert.deepEqual(strip(a), strip(b));
  // Each chunk a message of its own on the object's chunk subject, in order.
  const si = await jsm.streams.info('OBJ_layout', { subjects_filter: '$O.layout.C.>' });
  assert.equal(si.state.subjects?.[`$O.layout.C.${a.nuid}`], 4);
  assert.equal(si.state.subjects?.[`$O.layout.C.${b.nuid}`], 4);
});

test('several uploads at once on one connection each read back whole; replacing keeps one', async () => {
  const store = await bucket('parallel', 4);
  const files = Array.from({ length: 6 }, (_, i) => randomBytes(i * 2 * CHUNK + i * 101));
  await mapLimit(files, 4, (data, i) => store.put(`set/job/f${i}`, pieces(data, 5000)));
  for (const [i, data] of files.entries()) {
    const stock = await stockGet('parallel', `set/job/f${i}`);
    assert.ok(!stock.error, `f${i}: ${String(stock.error)}`);
    assert.ok(stock.data.equals(data), `f${i}: bytes differ`);
  }
  // A new version replaces the old, whose chunks go.
  const next = randomBytes(2 * CHUNK);
  await store.put('set/job/f5', pieces(next, CHUNK));
  assert.ok((await stockGet('parallel', 'set/job/f5')).data.equals(next));
  assert.equal((await store.list('set/')).length, 6);
  const jsm = await jetstreamManager(nats.bus.nc);
  const si = await jsm.streams.info('OBJ_parallel', { subjects_filter: '$O.parallel.C.>' });
  const chunks = Object.values(si.state.subjects ?? {}).reduce((a, n) => a + n, 0);
  const expected = files.slice(0, 5).reduce((a, f) => a + Math.ceil(f.length / CHUNK), 2);
  assert.equal(chunks, expected, 'the replaced version left chunks behind');
});

test('an input that fails half-way leaves no object, no chunks, and the source error', async () => {
  const store = await bucket('broken', 4);
  const old = randomBytes(CHUNK + 5);
  await store.put('set/job/kept', pieces(old, CHUNK));
  async function* failing(): AsyncGenerator<Uint8Array> {
    yield randomBytes(3 * CHUNK);
    throw new Error('disk read failed');
  }
  await assert.rejects(store.put('set/job/new', failing()), /disk read failed/);
  await assert.rejects(store.put('set/job/kept', failing()), /disk read failed/);
  assert.deepEqual(
    (await store.list()).map((o) => o.name),
    ['set/job/kept'],
  );
  assert.ok((await collect(store.get('set/job/kept'))).equals(old), 'the old version was lost');
  const jsm = await jetstreamManager(nats.bus.nc);
  const si = await jsm.streams.info('OBJ_broken', { subjects_filter: '$O.broken.C.>' });
  assert.equal(Object.keys(si.state.subjects ?? {}).length, 1, 'chunks of the failed puts stayed');
});

test('a server lost mid-upload fails the put with a retryable error and no complete object', async () => {
  const store = await bucket('lost', 4, 1000);
  let sent = 0;
  async function* slow(): AsyncGenerator<Uint8Array> {
    for (;;) {
      yield randomBytes(CHUNK);
      if (++sent === 4) void nats.crash(1500);
      await new Promise((r) => setTimeout(r, 20));
      if (sent > 400) return;
    }
  }
  await assert.rejects(store.put('set/job/cut', slow()), (e: unknown) => {
    assert.ok(isDroverError(e), `not a DroverError: ${String(e)}`);
    assert.equal(e.retryable, true, `${e.code}: ${e.message}`);
    return true;
  });
  // Once the server is back, the name has no object: a reader never sees a partial one.
  for (let i = 0; ; i++) {
    try {
      assert.deepEqual(await store.list('set/'), []);
      break;
    } catch (err) {
      if (i > 100 || err instanceof assert.AssertionError) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  await assert.rejects(collect(store.get('set/job/cut')), (e: unknown) =>
    isDroverError(e, 'NOT_FOUND'),
  );
});

test(
  "the name's current version is looked up alongside the chunks, and replaced after them",
  {
    timeout: 10_000,
  },
  async () => {
    // Fakes of the layer below: the lookup answers only once a chunk has gone up, so an upload that
    // waited for it first would never finish.
    const events: string[] = [];
    let chunkSent!: () => void;
    const firstChunk = new Promise<void>((resolve) => (chunkSent = resolve));
    const os = {
      stream: 'OBJ_b',
      _chunkSubject: (id: string) => `$O.b.C.${id}`,
      _metaSubject: (name: string) => `$O.b.M.${name}`,
      info: async (name: string) => {
        events.push(`lookup ${name}`);
        await firstChunk;
        events.push('lookup answered');
        return { nuid: 'OLD' };
      },
    };
    const js = {
      publish: async (subject: string) => {
        events.push(subject.startsWith('$O.b.C.') ? 'chunk' : 'record');
        if (subject.startsWith('$O.b.C.')) chunkSent();
        return Promise.resolve({});
      },
      jetstreamManager: async () => ({
        streams: {
          purge: async (_stream: string, o: { filter: string }) => {
            events.push(`purge ${o.filter}`);
            return Promise.resolve({});
          },
        },
      }),
    };
    const nc = { info: { max_payload: 1024 * 1024 } };
    const put = await putPipelined(
      nc as never,
      js as never,
      os as never,
      'b',
      'set/job/f',
      pieces(randomBytes(3 * CHUNK), CHUNK),
      { chunkBytes: CHUNK, inFlight: 2, timeoutMs: 1000 },
    );
    assert.equal(put.chunks, 3);
    // The lookup starts first but does not hold the chunks back; the record goes after every
    // chunk and the answer, and the version it replaced is purged last.
    assert.deepEqual(events.slice(0, 2), ['lookup set/job/f', 'chunk']);
    assert.equal(events.filter((e) => e === 'chunk').length, 3);
    assert.ok(events.indexOf('record') > events.lastIndexOf('chunk'));
    assert.ok(events.indexOf('record') > events.indexOf('lookup answered'));
    assert.deepEqual(events.slice(-2), ['record', 'purge $O.b.C.OLD']);
  },
);
