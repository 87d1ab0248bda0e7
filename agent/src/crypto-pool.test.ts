/**
 * Tests of the crypto threads: records they seal are the format image-crypto.ts always wrote
 * (images sealed before still open), and they open what the main thread sealed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { CryptoPool, INLINE_BYTES } from './crypto-pool.js';

const aad = (s: string): Buffer => Buffer.from(s);

test('a record sealed on a crypto thread opens with a plain decipher; and the reverse', async () => {
  const pool = new CryptoPool(2);
  const key = randomBytes(32);
  const plain = randomBytes(1024 * 1024 + 3);
  const record = Buffer.from(await pool.seal(key, aad('x/0/0'), plain));
  const len = record.readUInt32BE(0);
  assert.equal(record.length, 4 + 12 + len + 16);
  const d = createDecipheriv('aes-256-gcm', key, record.subarray(4, 16));
  d.setAAD(aad('x/0/0'));
  d.setAuthTag(record.subarray(16 + len));
  assert.ok(Buffer.concat([d.update(record.subarray(16, 16 + len)), d.final()]).equals(plain));

  // Sealed on the main thread, as the last chunk: opens as last, and not under another name.
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(aad('y/1/1'));
  const body = Buffer.concat([c.update(plain), c.final()]);
  const tag = c.getAuthTag();
  const opened = await pool.open(key, aad('y/1/0'), aad('y/1/1'), nonce, body, tag);
  assert.ok(opened && opened.last && Buffer.from(opened.plain).equals(plain));
  assert.equal(await pool.open(key, aad('z/1/0'), aad('z/1/1'), nonce, body, tag), null);
  // The caller's bytes are left as they were (a copy went to the thread).
  assert.equal(plain.length, 1024 * 1024 + 3);
  assert.equal(body.length, plain.length);
});

test('many chunks at once come back each to its caller', async () => {
  const pool = new CryptoPool(2);
  const key = randomBytes(32);
  const chunks = Array.from({ length: 40 }, (_, i) => randomBytes(1000 + i));
  const sealed = await Promise.all(chunks.map((c, i) => pool.seal(key, aad(`n/${i}`), c)));
  const opened = await Promise.all(
    sealed.map((r, i) => {
      const b = Buffer.from(r);
      const len = b.readUInt32BE(0);
      return pool.open(
        key,
        aad(`n/${i}`),
        aad(`n/${i}/last`),
        b.subarray(4, 16),
        b.subarray(16, 16 + len),
        b.subarray(16 + len),
      );
    }),
  );
  opened.forEach((o, i) => assert.ok(o && Buffer.from(o.plain).equals(chunks[i]!), `chunk ${i}`));
});

test('chunks at and around the inline size seal and open alike on either side of it', async () => {
  const pool = new CryptoPool(1);
  const key = randomBytes(32);
  for (const size of [0, 1, INLINE_BYTES, INLINE_BYTES + 1]) {
    const plain = randomBytes(size);
    const b = Buffer.from(await pool.seal(key, aad(`s/${size}`), plain));
    const len = b.readUInt32BE(0);
    assert.equal(b.length, 4 + 12 + len + 16);
    // A plain decipher opens it, whichever side sealed it.
    const d = createDecipheriv('aes-256-gcm', key, b.subarray(4, 16));
    d.setAAD(aad(`s/${size}`));
    d.setAuthTag(b.subarray(16 + len));
    assert.ok(Buffer.concat([d.update(b.subarray(16, 16 + len)), d.final()]).equals(plain));
    const body = b.subarray(16, 16 + len);
    const tag = b.subarray(16 + len);
    const asLast = await pool.open(
      key,
      aad('other'),
      aad(`s/${size}`),
      b.subarray(4, 16),
      body,
      tag,
    );
    assert.ok(asLast && asLast.last && Buffer.from(asLast.plain).equals(plain), `size ${size}`);
    assert.equal(await pool.open(key, aad('a'), aad('b'), b.subarray(4, 16), body, tag), null);
    // The caller's record is left whole.
    assert.equal(b.length, 4 + 12 + len + 16);
  }
});
