/**
 * Files in a JetStream object store: the durable home of image sets. Objects are named by path-like
 * keys (`<set>/<job>/<file>`); a key prefix groups one image. Streams in and out, never whole files
 * in memory; the caller checksums what passes (the store keeps its own digest as well).
 */
import { createHash } from 'node:crypto';
import { jetstream, jetstreamManager, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { Objm, setSha256Backend, type ObjectStore } from '@nats-io/obj';
import { DroverError, ErrorCode } from '@drover/common';
import type { Bus } from './connection.js';
import { putPipelined } from './object-put.js';
import { mapJetStreamError } from './state-store.js';

/** How to open an object bucket. */
export interface ObjectFilesOptions {
  bucket: string;
  /** Create the bucket when missing (the controller does; agents only open). */
  create: boolean;
  /** Replicas when created: 3 on a 3-node NATS cluster. */
  replicas?: number;
  timeoutMs?: number;
  /** Bytes per chunk (default 1 MiB; capped at the server's max_payload). */
  chunkBytes?: number;
  /**
   * Chunk publishes of one upload awaiting their ack at once (default 4: memory per upload is
   * (4 + 1) × chunkBytes). `0` is nats.js's own `put`, one chunk acknowledged before the next is
   * sent: the path before pipelining, kept as a reference for the store micro-bench.
   */
  chunksInFlight?: number;
}

/** One stored object. */
export interface StoredObject {
  name: string;
  size: number;
  /** The store's digest (`SHA-256=<base64url>`). */
  digest: string;
}

// The store's own digest of every object in and out: node:crypto's SHA-256, not nats.js's pure-JS
// default (measured here: 44 ms against 1,037 ms per 64 MiB, all of it on the caller's thread).
setSha256Backend('native');

/**
 * Chunks of 1 MiB: NATS's default payload limit (a server with a smaller one gets chunks of its
 * limit). Half the messages of 512 KiB chunks: each chunk is a JetStream request of its own (an
 * ack to wait for and parse, a timer, nats.js's request bookkeeping) and a read of the file it
 * comes from, and that per-chunk CPU was a share of an image push (docs/PERFORMANCE.md,
 * _Bottlenecks_, 14).
 */
const CHUNK_BYTES = 1024 * 1024;
/**
 * Chunks of one upload sent ahead of their acks (see ObjectFilesOptions.chunksInFlight): 4 of
 * 1 MiB, as many bytes in flight as 8 of 512 KiB were.
 */
const CHUNKS_IN_FLIGHT = 4;

/** Named files in one JetStream object bucket. */
export class ObjectFiles {
  private constructor(
    private readonly os: ObjectStore,
    readonly bucket: string,
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly upload: { chunkBytes: number; inFlight: number; timeoutMs: number },
  ) {}

  static async open(bus: Bus, options: ObjectFilesOptions): Promise<ObjectFiles> {
    const timeout = options.timeoutMs ?? 5000;
    const js: JetStreamClient = jetstream(bus.nc, { timeout });
    const objm = new Objm(js);
    try {
      const os = options.create
        ? await objm.create(options.bucket, { replicas: options.replicas ?? 1 })
        : await objm.open(options.bucket);
      return new ObjectFiles(os, options.bucket, bus.nc, js, {
        chunkBytes: options.chunkBytes ?? CHUNK_BYTES,
        inFlight: options.chunksInFlight ?? CHUNKS_IN_FLIGHT,
        timeoutMs: timeout,
      });
    } catch (err) {
      if (!options.create && /not found/i.test(String(err))) {
        throw new DroverError(
          ErrorCode.FailedPrecondition,
          `object bucket ${options.bucket} does not exist (a controller creates it when it starts)`,
          { cause: err, details: { bucket: options.bucket } },
        );
      }
      throw mapJetStreamError(`cannot open object bucket ${options.bucket}`, err, {
        bucket: options.bucket,
      });
    }
  }

  /**
   * Bytes per stored chunk (the configured size, capped at the server's max_payload): a `put`
   * whose input comes in pieces of this size sends each as its chunk, not copied.
   */
  get chunkBytes(): number {
    return Math.min(this.upload.chunkBytes, this.nc.info?.max_payload ?? this.upload.chunkBytes);
  }

  /** Store `data` as `name`, replacing any object of that name. */
  async put(name: string, data: AsyncIterable<Uint8Array>): Promise<StoredObject> {
    try {
      if (this.upload.inFlight > 0) {
        const info = await putPipelined(
          this.nc,
          this.js,
          this.os,
          this.bucket,
          name,
          data,
          this.upload,
        );
        return { name: info.name, size: info.size, digest: info.digest };
      }
      const info = await this.os.put(
        { name, options: { max_chunk_size: this.upload.chunkBytes } },
        ReadableStream.from(data),
      );
      return { name: info.name, size: info.size, digest: info.digest };
    } catch (err) {
      // nats.js removes the chunks of a put that failed half-way with a purge of the stream; a
      // client whose role may not purge (an agent) gets that refusal instead of the failure
      // itself (a lost server, a timeout). The put was interrupted: another may succeed, and the
      // chunks left behind go with the next `sweepOrphanChunks`.
      if (/permissions violation.*\$JS\.API\.STREAM\.PURGE\./i.test(String(err))) {
        throw new DroverError(
          ErrorCode.Unavailable,
          `cannot store object ${name}: the upload was interrupted (its partial chunks stay until swept)`,
          { retryable: true, cause: err, details: { name } },
        );
      }
      throw mapJetStreamError(`cannot store object ${name}`, err, { name });
    }
  }

  /**
   * The bytes of `name`, streamed. The iteration throws if the object is missing, incomplete, or
   * its digest does not match what the store recorded.
   *
   * Read through an ordered consumer of its own, as nats.js's `get` does, but deleted once the
   * read ends: nats.js leaves each one to the server's inactivity threshold (5 minutes), and
   * JetStream refuses a stream's 1,001st consumer, so reading a thousand objects within five
   * minutes (one set's restore, before image packs) failed with "maximum consumers limit
   * reached".
   */
  async *get(name: string): AsyncGenerator<Uint8Array> {
    let info;
    try {
      info = await this.os.info(name);
    } catch (err) {
      throw mapJetStreamError(`cannot read object ${name}`, err, { name });
    }
    if (info === null || info.deleted) {
      throw new DroverError(ErrorCode.NotFound, `no object ${name} in ${this.bucket}`, {
        details: { name, bucket: this.bucket },
      });
    }
    if (info.size === 0) return;
    let oc;
    try {
      oc = await this.js.consumers.getPushConsumer(`OBJ_${this.bucket}`, {
        filter_subjects: `$O.${this.bucket}.C.${info.nuid}`,
      });
    } catch (err) {
      throw mapJetStreamError(`cannot read object ${name}`, err, { name });
    }
    const damaged = (why: string): DroverError =>
      new DroverError(ErrorCode.DataLoss, `object ${name} is damaged: ${why}`, {
        details: { name },
      });
    try {
      const sha = createHash('sha256');
      let bytes = 0;
      let last = false;
      for await (const m of await oc.consume()) {
        if (m.data.length > 0) {
          sha.update(m.data);
          bytes += m.data.length;
          yield m.data;
        }
        if (m.info.pending === 0) {
          last = true;
          break;
        }
      }
      if (!last || bytes !== info.size) {
        throw damaged(`${bytes} of its ${info.size} bytes arrived`);
      }
      if (!sameDigest(info.digest, sha.digest())) {
        throw damaged(`its digest is not the recorded ${info.digest}`);
      }
    } finally {
      await oc.delete().catch(() => undefined);
    }
  }

  /** Objects whose name starts with `prefix`. */
  async list(prefix = ''): Promise<StoredObject[]> {
    try {
      return (await this.os.list())
        .filter((o) => !o.deleted && o.name.startsWith(prefix))
        .map((o) => ({ name: o.name, size: o.size, digest: o.digest }));
    } catch (err) {
      throw mapJetStreamError(`cannot list ${this.bucket}`, err);
    }
  }

  /**
   * Remove chunks no object refers to (left by uploads that were interrupted, or replaced objects
   * whose old chunks a client could not purge), once their newest chunk is older than `graceMs`:
   * an upload in progress writes chunks before its object's record, and keeps writing them.
   * Returns how many chunk subjects went. Needs a role that may purge (the controller's).
   */
  async sweepOrphanChunks(graceMs = 10 * 60_000): Promise<number> {
    try {
      const stream = `OBJ_${this.bucket}`;
      const jsm = await jetstreamManager(this.nc);
      const si = await jsm.streams.info(stream, { subjects_filter: `$O.${this.bucket}.C.>` });
      const chunkSubjects = Object.keys(si.state.subjects ?? {});
      if (chunkSubjects.length === 0) return 0;
      const used = new Set((await this.os.list()).filter((o) => !o.deleted).map((o) => o.nuid));
      let n = 0;
      for (const subject of chunkSubjects) {
        if (used.has(subject.slice(`$O.${this.bucket}.C.`.length))) continue;
        const last = await jsm.streams.getMessage(stream, { last_by_subj: subject });
        if (last === null || Date.now() - last.time.getTime() < graceMs) continue;
        await jsm.streams.purge(stream, { filter: subject });
        n++;
      }
      return n;
    } catch (err) {
      throw mapJetStreamError(`cannot sweep ${this.bucket}`, err);
    }
  }

  /** Delete every object whose name starts with `prefix`; returns how many went. */
  async deletePrefix(prefix: string): Promise<number> {
    let n = 0;
    for (const o of await this.list(prefix)) {
      try {
        await this.os.delete(o.name);
        n++;
      } catch (err) {
        throw mapJetStreamError(`cannot delete object ${o.name}`, err, { name: o.name });
      }
    }
    return n;
  }
}

/** Whether a store digest (`SHA-256=<base64 or base64url>`) names these SHA-256 bytes. */
export function sameDigest(recorded: string, sha256: Buffer): boolean {
  const at = recorded.indexOf('=');
  if (at < 0 || recorded.slice(0, at).toUpperCase() !== 'SHA-256') return false;
  // Node's base64 decoder takes both alphabets, with or without padding.
  return Buffer.from(recorded.slice(at + 1), 'base64').equals(sha256);
}
