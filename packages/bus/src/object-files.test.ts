/** Tests for ObjectFiles against a real nats-server: streamed round trips, listing, deletion. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { getSha256Backend, Objm } from '@nats-io/obj';
import { isDroverError } from '@drover/common';
import { ObjectFiles, sameDigest } from './object-files.js';
import { startTestNats, type TestNats } from './test-nats.js';

let nats: TestNats;

before(async () => {
  nats = await startTestNats('objects-test');
});

after(async () => {
  await nats?.stop();
});

async function* chunks(data: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

test('opening a bucket that does not exist without create is FAILED_PRECONDITION', async () => {
  await assert.rejects(
    ObjectFiles.open(nats.bus, { bucket: 'missing', create: false }),
    (e: unknown) => isDroverError(e, 'FAILED_PRECONDITION') && /does not exist/.test(String(e)),
  );
});

test('a 3 MiB file streams in and out byte for byte; names group by prefix; deletePrefix', async () => {
  const store = await ObjectFiles.open(nats.bus, { bucket: 'imgs', create: true });
  const data = randomBytes(3 * 1024 * 1024 + 17);
  // The digest is node:crypto's (not nats.js's pure-JS one, 20 times slower on the caller's thread).
  assert.equal(getSha256Backend(), 'native');
  const put = await store.put('s1/job-a/pages-1.img', chunks(data, 100_000));
  assert.equal(put.size, data.length);
  const expected = createHash('sha256').update(data).digest('base64url');
  assert.equal(put.digest.replace(/=+$/, ''), `SHA-256=${expected}`);
  await store.put('s1/job-a/core-1.img', chunks(Buffer.from('core'), 4));
  await store.put('s1/job-b/core-1.img', chunks(Buffer.from('other'), 4));
  await store.put('s10/job-a/core-1.img', chunks(Buffer.from('not s1'), 4));
  const back = await collect(store.get('s1/job-a/pages-1.img'));
  assert.ok(back.equals(data), 'bytes differ');
  // Replacing an object keeps one of that name.
  await store.put('s1/job-a/core-1.img', chunks(Buffer.from('core2'), 4));
  assert.equal((await collect(store.get('s1/job-a/core-1.img'))).toString(), 'core2');
  assert.deepEqual((await store.list('s1/')).map((o) => o.name).sort(), [
    's1/job-a/core-1.img',
    's1/job-a/pages-1.img',
    's1/job-b/core-1.img',
  ]);
  assert.equal(await store.deletePrefix('s1/'), 3);
  assert.deepEqual(
    (await store.list()).map((o) => o.name),
    ['s10/job-a/core-1.img'],
  );
  await assert.rejects(collect(store.get('s1/job-a/pages-1.img')), (e: unknown) =>
    isDroverError(e, 'NOT_FOUND'),
  );
});

test('the space of deleted objects is given back (nats-server 2.9.10 kept it until a restart)', async () => {
  const store = await ObjectFiles.open(nats.bus, { bucket: 'space', create: true });
  const jsm = await jetstreamManager(nats.bus.nc);
  // The account's usage is what the server's store limit is judged against.
  const bytes = async (): Promise<number> => (await jsm.getAccountInfo()).storage;
  const before = await bytes();
  for (let i = 0; i < 4; i++) {
    await store.put(`set/job/pages-${i}.img`, chunks(randomBytes(2 * 1024 * 1024), 256 * 1024));
  }
  assert.ok((await bytes()) - before >= 8 * 1024 * 1024, 'the objects take their space');
  assert.equal(await store.deletePrefix('set/'), 4);
  // What stays are the delete markers (one small message per object).
  const left = (await bytes()) - before;
  assert.ok(left < 64 * 1024, `${left} bytes still held after every object was deleted`);
});

test('chunks no object refers to are swept once old enough; live objects keep theirs', async () => {
  const store = await ObjectFiles.open(nats.bus, { bucket: 'orphans', create: true });
  const data = randomBytes(300 * 1024);
  await store.put('set/job/kept.img', chunks(data, 64 * 1024));
  // What an interrupted upload leaves: chunks under a nuid that no object record names.
  const js = jetstream(nats.bus.nc);
  for (let i = 0; i < 3; i++)
    await js.publish('$O.orphans.C.interruptedUpload1', randomBytes(1024));
  assert.equal(await store.sweepOrphanChunks(3_600_000), 0, 'young chunks may be an upload');
  assert.equal(await store.sweepOrphanChunks(0), 1);
  assert.equal(await store.sweepOrphanChunks(0), 0);
  assert.ok((await collect(store.get('set/job/kept.img'))).equals(data), 'a live object lost data');
});

test("each read's consumer goes with it: more objects than a stream may have consumers are read", async () => {
  const store = await ObjectFiles.open(nats.bus, { bucket: 'many', create: true });
  // JetStream refuses a stream's 1,001st consumer; nats.js's own get left each read's for 5 min.
  const n = 1_050;
  for (let i = 0; i < n; i++) await store.put(`o${i}`, chunks(Buffer.from(`object ${i}`), 64));
  const jsm = await jetstreamManager(nats.bus.nc);
  for (let i = 0; i < n; i++) {
    assert.equal((await collect(store.get(`o${i}`))).toString(), `object ${i}`);
  }
  assert.equal((await jsm.streams.info('OBJ_many')).state.consumer_count, 0);
  // A read abandoned half-way leaves none either.
  await store.put('big', chunks(randomBytes(2 * 1024 * 1024), 256 * 1024));
  for await (const c of store.get('big')) {
    assert.ok(c.length > 0);
    break;
  }
  assert.equal((await jsm.streams.info('OBJ_many')).state.consumer_count, 0);
});

test('a stored digest names its bytes in either base64 alphabet, padded or not', () => {
  const sha = createHash('sha256').update('x').digest();
  for (const enc of ['base64', 'base64url'] as const) {
    assert.ok(sameDigest(`SHA-256=${sha.toString(enc)}`, sha));
    assert.ok(sameDigest(`SHA-256=${sha.toString(enc).replace(/=+$/, '')}`, sha));
  }
  assert.ok(!sameDigest(`SHA-256=${createHash('sha256').update('y').digest('base64url')}`, sha));
  assert.ok(!sameDigest(`MD5=${sha.toString('base64')}`, sha));
});

test('by default an object goes up in chunks of 1 MiB (the server max_payload), read back whole', async () => {
  const store = await ObjectFiles.open(nats.bus, { bucket: 'chunking', create: true });
  assert.equal(store.chunkBytes, 1024 * 1024);
  const data = randomBytes(3 * 1024 * 1024 + 5);
  // Read in pieces of the store's chunk size, as an image push reads its files.
  await store.put('s1/job-a/pages-1.img', chunks(data, store.chunkBytes));
  const info = await new Objm(jetstream(nats.bus.nc))
    .open('chunking')
    .then((os) => os.info('s1/job-a/pages-1.img'));
  assert.equal(info?.chunks, 4);
  assert.equal(info?.options?.max_chunk_size, 1024 * 1024);
  assert.ok((await collect(store.get('s1/job-a/pages-1.img'))).equals(data), 'bytes differ');
  // An object of smaller chunks (a set stored before) reads back the same.
  const small = await ObjectFiles.open(nats.bus, {
    bucket: 'chunking',
    create: false,
    chunkBytes: 512 * 1024,
  });
  await small.put('s0/job-a/pages-1.img', chunks(data, 100_000));
  assert.ok((await collect(store.get('s0/job-a/pages-1.img'))).equals(data), 'bytes differ');
});
