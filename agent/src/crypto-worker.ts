/**
 * A thread that seals and opens image chunks (AES-256-GCM) for crypto-pool.ts, so that the
 * agent's main thread does not spend its time in the cipher (a few ms per MiB, more on a loaded
 * machine). One message per chunk; the record format is image-crypto.ts's.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { parentPort } from 'node:worker_threads';

/** A request from the pool. */
export type CryptoRequest =
  | { id: number; op: 'seal'; key: Uint8Array; aad: Uint8Array; plain: Uint8Array }
  | {
      id: number;
      op: 'open';
      key: Uint8Array;
      /** The chunk's additional data as a middle chunk, and as the last one. */
      aad: Uint8Array;
      aadLast: Uint8Array;
      nonce: Uint8Array;
      body: Uint8Array;
      tag: Uint8Array;
    };

/** The answer: the sealed record, or the plaintext and whether it authenticated as last. */
export type CryptoReply =
  | { id: number; record: Uint8Array }
  | { id: number; plain: Uint8Array; last: boolean }
  | { id: number; failed: true };

const NONCE = 12;

function seal(key: Uint8Array, aad: Uint8Array, plain: Uint8Array): Uint8Array {
  const nonce = randomBytes(NONCE);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(aad);
  // GCM's final() yields no bytes: the body is update()'s, copied once into the record (every
  // byte of which is written below, hence allocUnsafe).
  const body = c.update(plain);
  c.final();
  const record = Buffer.allocUnsafe(4 + NONCE + body.length + 16);
  record.writeUInt32BE(body.length, 0);
  nonce.copy(record, 4);
  body.copy(record, 4 + NONCE);
  c.getAuthTag().copy(record, 4 + NONCE + body.length);
  return record;
}

function open(
  key: Uint8Array,
  aad: Uint8Array,
  nonce: Uint8Array,
  body: Uint8Array,
  tag: Uint8Array,
): Buffer | null {
  try {
    const d = createDecipheriv('aes-256-gcm', key, nonce);
    d.setAAD(aad);
    d.setAuthTag(tag);
    return Buffer.concat([d.update(body), d.final()]);
  } catch {
    return null;
  }
}

/** Bytes in an ArrayBuffer of their own (a pooled Buffer's must not be transferred away). */
export function owned(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b : new Uint8Array(b);
}

/** The answer to `m`, computed on the calling thread. */
export function answer(m: CryptoRequest): CryptoReply {
  if (m.op === 'seal') return { id: m.id, record: seal(m.key, m.aad, m.plain) };
  // The last chunk is the one that authenticates as last; try "not last" first.
  const mid = open(m.key, m.aad, m.nonce, m.body, m.tag);
  const last = mid === null ? open(m.key, m.aadLast, m.nonce, m.body, m.tag) : null;
  return mid !== null
    ? { id: m.id, plain: mid, last: false }
    : last !== null
      ? { id: m.id, plain: last, last: true }
      : { id: m.id, failed: true };
}

parentPort?.on('message', (m: CryptoRequest) => {
  // Moved back, not copied: the bytes in an ArrayBuffer of their own.
  const r = answer(m);
  const reply: CryptoReply =
    'record' in r
      ? { id: r.id, record: owned(r.record) }
      : 'plain' in r
        ? { ...r, plain: owned(r.plain) }
        : r;
  const out = 'record' in reply ? reply.record : 'plain' in reply ? reply.plain : null;
  parentPort?.postMessage(reply, out ? [out.buffer as ArrayBuffer] : []);
});
