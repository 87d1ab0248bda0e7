/**
 * The pipelined object upload: writes an object in exactly nats.js's object-store format (chunks
 * on `$O.<bucket>.C.<nuid>`, then one rollup record on `$O.<bucket>.M.<name>` carrying size,
 * chunk count and `SHA-256=` digest), so the stock `get` reads it back, but keeps several chunk
 * publishes in flight instead of awaiting each chunk's ack before sending the next (nats.js 3.4's
 * `put`), as nats.go's `Put` does with its async publishes.
 */
import { createHash } from 'node:crypto';
import { JsHeaders, type JetStreamClient } from '@nats-io/jetstream';
import { headers, nuid, type NatsConnection } from '@nats-io/nats-core';
import { Base64UrlPaddedCodec, type ObjectStore } from '@nats-io/obj';

/** How a pipelined upload cuts and sends. */
export interface PipelinedPutOptions {
  /** Bytes per chunk (nats.js caps it at the server's max_payload as well). */
  chunkBytes: number;
  /** Chunk publishes awaiting their ack at once (at least 1). */
  inFlight: number;
  timeoutMs: number;
}

/** What the upload recorded. */
export interface PipelinedPutResult {
  name: string;
  size: number;
  digest: string;
  chunks: number;
}

/**
 * The parts of nats.js's ObjectStoreImpl that fix the format (present on the object `Objm`
 * returns, not in its public type): read here so a subject is spelled in one place, theirs.
 */
interface ObjectStoreFormat {
  stream: string;
  _chunkSubject(id: string): string;
  _metaSubject(name: string): string;
  info(name: string): Promise<{ nuid: string } | null>;
}

/**
 * Store `data` as `name` in `os`. Memory: at most `inFlight` chunks sent and not yet acknowledged
 * plus the one being filled, i.e. `(inFlight + 1) × chunkBytes`, whatever the input's size.
 * On a failure no record is written (the object stays absent or keeps its old version), the chunks
 * that landed are purged, and the first failure is thrown; as with nats.js, a purge that fails (a
 * role that may not purge, a server gone) throws its own error instead.
 */
export async function putPipelined(
  nc: NatsConnection,
  js: JetStreamClient,
  os: ObjectStore,
  bucket: string,
  name: string,
  data: AsyncIterable<Uint8Array>,
  options: PipelinedPutOptions,
): Promise<PipelinedPutResult> {
  if (!name) throw new Error('name cannot be empty');
  const fmt = os as unknown as ObjectStoreFormat;
  const maxPayload = nc.info?.max_payload ?? 1024;
  const chunkBytes = Math.min(options.chunkBytes, maxPayload);
  const timeout = options.timeoutMs;
  // The name's current version, if any (its chunks go once the new one is live), is looked up
  // while the chunks go up: not a round trip of its own before them (an image is dozens of
  // small files, each one chunk). It is settled before the record is written, so it is the version
  // that record replaces.
  const previous = fmt.info(name);
  previous.catch(() => undefined);
  const id = nuid.next();
  const chunkSubj = fmt._chunkSubject(id);
  const sha = createHash('sha256');
  let size = 0;
  let chunks = 0;
  const inflight: Promise<unknown>[] = [];
  const failed: { err?: unknown } = {};
  const send = async (payload: Uint8Array): Promise<void> => {
    sha.update(payload);
    size += payload.length;
    chunks++;
    // Sent at once, in order: one connection keeps the stream's chunk order (the digest on
    // read checks it). The ack is awaited only once `inFlight` are outstanding.
    const p = js.publish(chunkSubj, payload, { timeout });
    p.catch((err: unknown) => {
      if (!('err' in failed)) failed.err = err;
    });
    inflight.push(p);
    while (inflight.length >= Math.max(1, options.inFlight)) await inflight.shift();
  };
  try {
    // A piece's tail shorter than a chunk is held, not copied: if the input ends there (a small
    // file is one such piece) it is sent as it is; only a following piece makes it a chunk's start
    // in a buffer of its own.
    let fill: Buffer | null = null;
    let at = 0;
    let held: Uint8Array | null = null;
    for await (const piece of data) {
      if (held) {
        fill = Buffer.allocUnsafe(chunkBytes);
        fill.set(held, 0);
        at = held.length;
        held = null;
      }
      let off = 0;
      while (off < piece.length) {
        if (at === 0 && piece.length - off >= chunkBytes) {
          // A whole chunk in the piece: sent as a view, not copied (the input's buffers are not
          // reused once yielded, as nats.js's own put also assumes).
          await send(piece.subarray(off, off + chunkBytes));
          off += chunkBytes;
          continue;
        }
        if (at === 0) {
          held = piece.subarray(off);
          break;
        }
        fill ??= Buffer.allocUnsafe(chunkBytes);
        const n = Math.min(chunkBytes - at, piece.length - off);
        fill.set(piece.subarray(off, off + n), at);
        at += n;
        off += n;
        if (at === chunkBytes) {
          await send(fill);
          fill = null;
          at = 0;
        }
      }
      if ('err' in failed) throw failed.err;
    }
    if (held) await send(held);
    else if (at > 0 && fill) await send(fill.subarray(0, at));
    await Promise.all(inflight.splice(0));
    const old = await previous;
    // The record, as nats.js writes it (same keys, same order, a rollup of the name's subject).
    const info = {
      bucket,
      nuid: id,
      size,
      chunks,
      name,
      description: '',
      options: { max_chunk_size: chunkBytes },
      mtime: new Date().toISOString(),
      digest: `SHA-256=${Base64UrlPaddedCodec.encode(sha.digest())}`,
      deleted: false,
    };
    const h = headers();
    h.set(JsHeaders.RollupHdr, JsHeaders.RollupValueSubject);
    await js.publish(fmt._metaSubject(name), JSON.stringify(info), { headers: h, timeout });
    if (old) {
      // The new version is live; the old one's chunks go (a refusal leaves them to the sweep).
      const jsm = await js.jetstreamManager();
      await jsm.streams
        .purge(fmt.stream, { filter: fmt._chunkSubject(old.nuid) })
        .catch(() => undefined);
    }
    return { name, size, digest: info.digest, chunks };
  } catch (err) {
    // Every publish sent is settled before the purge, so none lands after it.
    await Promise.allSettled(inflight.splice(0));
    const first = 'err' in failed ? failed.err : err;
    const jsm = await js.jetstreamManager();
    await jsm.streams.purge(fmt.stream, { filter: chunkSubj });
    throw first;
  }
}
