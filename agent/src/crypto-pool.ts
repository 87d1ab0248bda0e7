/**
 * AES-256-GCM for image chunks on worker threads (crypto-worker.ts), so sealing and opening
 * images — a few ms of CPU per MiB, more on a loaded machine — keeps off the agent's main thread
 * (its event loop serves requests). Workers start on first use, hold no process open, and a
 * worker that dies fails only the chunks it held.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { DroverError, ErrorCode } from '@drover/common';
import { answer, type CryptoReply, type CryptoRequest } from './crypto-worker.js';

type Pending = { resolve: (r: CryptoReply) => void; reject: (e: Error) => void };

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
}

/** Chunks this size or smaller are sealed and opened on the calling thread. */
export const INLINE_BYTES = 64 * 1024;

/** Chunk crypto on `size` worker threads (small chunks: on the calling thread). */
export class CryptoPool {
  private readonly slots: (Slot | null)[];
  private nextId = 1;

  constructor(readonly size: number) {
    this.slots = Array.from({ length: size }, () => null);
  }

  /** Seal one chunk: the whole record (length, nonce, ciphertext, tag). */
  async seal(key: Uint8Array, aad: Uint8Array, plain: Uint8Array): Promise<Uint8Array> {
    // A small chunk (most files of an image are a few KiB) costs less here than its trip to a
    // thread and back (two thread wake-ups and the copies); a larger one is copied to a worker:
    // the caller's bytes may share a buffer with others.
    let r: CryptoReply;
    if (plain.length <= INLINE_BYTES) {
      r = answer({ id: 0, op: 'seal', key, aad, plain });
    } else {
      const copy = new Uint8Array(plain);
      r = await this.run({ id: 0, op: 'seal', key, aad, plain: copy }, [copy]);
    }
    if (!('record' in r)) throw new DroverError(ErrorCode.Internal, 'sealing a chunk failed');
    return r.record;
  }

  /**
   * Open one chunk: its plaintext and whether it authenticated as the last one, or null when it
   * authenticates as neither.
   */
  async open(
    key: Uint8Array,
    aad: Uint8Array,
    aadLast: Uint8Array,
    nonce: Uint8Array,
    body: Uint8Array,
    tag: Uint8Array,
  ): Promise<{ plain: Uint8Array; last: boolean } | null> {
    let r: CryptoReply;
    if (body.length <= INLINE_BYTES) {
      r = answer({ id: 0, op: 'open', key, aad, aadLast, nonce, body, tag });
    } else {
      const b = new Uint8Array(body);
      r = await this.run({ id: 0, op: 'open', key, aad, aadLast, nonce, body: b, tag }, [b]);
    }
    return 'plain' in r ? { plain: r.plain, last: r.last } : null;
  }

  private run(req: CryptoRequest, moved: Uint8Array[]): Promise<CryptoReply> {
    const id = this.nextId++;
    const slot = this.least();
    const transfer = moved.map((u) => u.buffer as ArrayBuffer);
    return new Promise<CryptoReply>((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      if (slot.pending.size === 1) slot.worker.ref();
      slot.worker.postMessage({ ...req, id }, transfer);
    });
  }

  /** The worker with the fewest chunks in hand (started if need be). */
  private least(): Slot {
    let best = -1;
    for (let i = 0; i < this.slots.length; i++) {
      const s = this.slots[i];
      if (!s) {
        best = i;
        break;
      }
      if (best < 0 || s.pending.size < this.slots[best]!.pending.size) best = i;
    }
    return this.slots[best] ?? this.start(best);
  }

  private start(i: number): Slot {
    const worker = new Worker(new URL('./crypto-worker.js', import.meta.url));
    const slot: Slot = { worker, pending: new Map() };
    worker.on('message', (r: CryptoReply) => {
      const p = slot.pending.get(r.id);
      slot.pending.delete(r.id);
      if (slot.pending.size === 0) worker.unref();
      p?.resolve(r);
    });
    const fail = (why: string, cause?: unknown): void => {
      if (this.slots[i] === slot) this.slots[i] = null;
      const err = new DroverError(ErrorCode.Internal, `image crypto thread ${why}`, { cause });
      for (const p of slot.pending.values()) p.reject(err);
      slot.pending.clear();
    };
    worker.on('error', (err) => fail('failed', err));
    worker.on('exit', (code) => fail(`exited (${code})`));
    worker.unref();
    this.slots[i] = slot;
    return slot;
  }
}

let pool: CryptoPool | null = null;

/** The agent's pool: one thread per core but one (the main thread keeps a core), at least one. */
export function cryptoPool(): CryptoPool {
  pool ??= new CryptoPool(Math.max(1, availableParallelism() - 1));
  return pool;
}
