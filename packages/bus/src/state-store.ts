/** Typed JSON state in one JetStream KV bucket: reads, compare-and-set writes, mutate, watch. */
import {
  jetstream,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type StoredMsg,
} from '@nats-io/jetstream';
import { Kvm, KvWatchInclude, type KV, type KvEntry } from '@nats-io/kv';
import { Empty, errors as natsErrors, headers } from '@nats-io/nats-core';
import { randomUUID } from 'node:crypto';
import { backoff, DroverError, ErrorCode, retry, isDroverError } from '@drover/common';
import type { Bus } from './connection.js';

/** How to open (or create) a state bucket. */
export interface StateStoreOptions {
  /** Bucket name: letters, digits, `-` and `_`. */
  bucket: string;
  /** 1 for a single server, 3 for a 3-node cluster. Only used when the bucket is created. */
  replicas?: 1 | 3;
  /** Revisions kept per key (1-64). Default 1. Only used when the bucket is created. */
  history?: number;
  /**
   * JetStream API timeout. Default 2000 ms. Keep it short: after a leader loss an R3 bucket is
   * unwritable for ~4.5 s, and a short timeout surfaces that as UNAVAILABLE instead of a hang.
   */
  timeoutMs?: number;
  /**
   * How long a call keeps retrying while JetStream is UNAVAILABLE (a server died, a stream or
   * meta leader is being elected) before it throws UNAVAILABLE. Default 30000 ms; 0 tries once.
   */
  retryForMs?: number;
}

/** A value with the revision (stream sequence) that wrote it: the token for `update`. */
export interface Versioned<T> {
  value: T;
  revision: number;
}

/** Options for {@link StateStore.mutate}. */
export interface MutateOptions {
  /** How many times to retry after a conflicting writer. Default 50. */
  retries?: number;
}

/** Options for {@link StateStore.watch}. */
export interface WatchOptions {
  /** Also deliver the current value of every key first. Default false (updates only). */
  includeExisting?: boolean;
  /** Called when a callback throws or a value cannot be decoded; the watch continues. */
  onError?: (err: DroverError) => void;
}

// The NATS KV key charset; empty tokens ("a..b") are refused too: they are not valid subjects.
const keyRe = /^[-/=\w]+(\.[-/=\w]+)*$/;
const filterRe = /^([-/=\w]+|\*|>)(\.([-/=\w]+|\*|>))*$/;

/** Throws INVALID_ARGUMENT unless `key` is a valid KV key (`[-/=_a-zA-Z0-9]` tokens joined by `.`). */
export function validateKey(key: string): void {
  if (!keyRe.test(key)) {
    throw new DroverError(ErrorCode.InvalidArgument, `invalid state key ${JSON.stringify(key)}`, {
      details: { key },
    });
  }
}

function validateFilter(filter: string): void {
  if (!filterRe.test(filter)) {
    throw new DroverError(
      ErrorCode.InvalidArgument,
      `invalid key filter ${JSON.stringify(filter)}`,
      {
        details: { filter },
      },
    );
  }
}

/** True for a stale-revision rejection ("wrong last sequence"). */
function isConflict(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
      err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/** Map whatever the NATS client threw to a DroverError; `what` names the operation. */
export function mapJetStreamError(
  what: string,
  err: unknown,
  details: Record<string, unknown> = {},
): DroverError {
  if (err instanceof DroverError) return err;
  const message = `${what}: ${err instanceof Error ? err.message : String(err)}`;
  const transient =
    err instanceof natsErrors.TimeoutError ||
    err instanceof natsErrors.NoRespondersError ||
    err instanceof natsErrors.ClosedConnectionError ||
    err instanceof natsErrors.ConnectionError ||
    err instanceof natsErrors.DrainingConnectionError ||
    // No responders on a JetStream subject: in a cluster, a stream whose leader is being elected.
    // "No suitable peers ... peer offline": a member is restarting (nats-server 2.12+ says so at
    // once where 2.9 timed out).
    /timeout|no responders|closed|disconnect|unavailable|jetstream is not enabled|peer offline/i.test(
      String(err),
    );
  if (transient) {
    return new DroverError(ErrorCode.Unavailable, message, {
      retryable: true,
      cause: err,
      details,
    });
  }
  if (err instanceof natsErrors.PermissionViolationError) {
    return new DroverError(ErrorCode.FailedPrecondition, message, { cause: err, details });
  }
  // The server refused the request as configured (e.g. "replicas > 1 not supported in
  // non-clustered mode"): retrying the same call will not help.
  if (err instanceof JetStreamApiError) {
    return new DroverError(ErrorCode.FailedPrecondition, message, {
      cause: err,
      details: { ...details, jsErrCode: err.code },
    });
  }
  return new DroverError(ErrorCode.Internal, message, { cause: err, details });
}

const encoder = new TextEncoder();

/** Header of a conditional write: an id per write, the same on each of its tries. */
const WRITE_ID_HEADER = 'Drover-Write-Id';

/** JetStream refusals of a stream add that lost a race with an identical one (10058, 10065). */
export const CREATE_RACE_CODES: readonly number[] = [10058, 10065];

/**
 * Run `attempt` until it succeeds, fails with anything but UNAVAILABLE, or `retryForMs` has
 * passed; `attempt` is told whether an earlier try may have reached the server.
 */
export async function retryUnavailable<R>(
  what: string,
  retryForMs: number,
  attempt: (retry: boolean) => Promise<R>,
  details: Record<string, unknown> = {},
): Promise<R> {
  return retry(
    async (n) => {
      try {
        return await attempt(n > 0);
      } catch (err) {
        throw mapJetStreamError(what, err, details);
      }
    },
    {
      forMs: retryForMs,
      // Exponential backoff from 50 ms to 1 s, jittered.
      pauseMs: backoff(50, 1000, { jitter: true }),
      retryIf: (err) => err instanceof DroverError && err.code === ErrorCode.Unavailable,
    },
  );
}

/** Raw read: the live value (null if absent or deleted) and the key's last revision (0 if never written). */
interface RawRead<T> {
  value: T | null;
  revision: number;
}

/**
 * Typed JSON state in one KV bucket. Writes are compare-and-set by revision where it matters;
 * per-key TTL is not used (nats-server 2.9.10 ignores it), so expiry is the caller's business.
 *
 * Every call rides over a JetStream outage of up to `retryForMs` (an R3 bucket is unwritable for
 * a few seconds after its leader dies). A write that timed out may still have been applied, so a
 * retried conditional write that then meets a conflict looks at what was stored:
 * if it carries this write's id, the earlier try succeeded and that is the result.
 */
export class StateStore<T> {
  private readonly stream: string;

  private constructor(
    private readonly kv: KV,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    /** The bucket name. */
    readonly bucket: string,
    private readonly retryForMs: number,
  ) {
    this.stream = `KV_${bucket}`;
  }

  /** Open the bucket, creating it if missing. UNAVAILABLE (retryable) when JetStream does not answer. */
  static async open<T>(bus: Bus, options: StateStoreOptions): Promise<StateStore<T>> {
    const timeout = options.timeoutMs ?? 2000;
    const retryForMs = options.retryForMs ?? 30_000;
    const js: JetStreamClient = jetstream(bus.nc, { timeout });
    const kv = await retryUnavailable(
      `cannot open state bucket ${options.bucket}`,
      retryForMs,
      async () => {
        const create = (): Promise<KV> =>
          new Kvm(js).create(options.bucket, {
            replicas: options.replicas ?? 1,
            history: options.history ?? 1,
            timeout,
            // Reads go to the stream leader. Direct gets may be answered by any replica, and a
            // follower can lag: right after a leader change, a read missed the write just
            // acknowledged (a finished drain read back as running).
            allow_direct: false,
          });
        try {
          return await create();
        } catch (err) {
          // Several processes creating the bucket at once: the loser's add can be refused
          // (name in use, or its subjects "overlap" the winner's). The bucket exists now.
          if (err instanceof JetStreamApiError && CREATE_RACE_CODES.includes(err.code)) {
            return create();
          }
          throw err;
        }
      },
      { bucket: options.bucket },
    );
    // No API check: that would be a request, and the bucket has just answered.
    const jsm = await js.jetstreamManager(false);
    return new StateStore<T>(kv, js, jsm, options.bucket, retryForMs);
  }

  /** The live value and its revision, or null when the key is absent or deleted. */
  async get(key: string): Promise<Versioned<T> | null> {
    const r = await this.read(key);
    return r.value === null ? null : { value: r.value, revision: r.revision };
  }

  /** Write unconditionally (last writer wins). Returns the new revision. */
  async put(key: string, value: T): Promise<number> {
    validateKey(key);
    const bytes = encoder.encode(JSON.stringify(value));
    // Writing the same value twice is harmless: retried as it is.
    return this.retrying(`put ${key}`, { key }, () => this.kv.put(key, bytes));
  }

  /** Write only if the key is absent (or deleted); ALREADY_EXISTS otherwise. Returns the revision. */
  async create(key: string, value: T): Promise<number> {
    validateKey(key);
    const bytes = encoder.encode(JSON.stringify(value));
    const exists = (cause: unknown): DroverError =>
      new DroverError(ErrorCode.AlreadyExists, `state key ${key} already exists`, {
        cause,
        details: { key },
      });
    try {
      // Revision 0: the key has no message at all.
      return await this.conditional(`create ${key}`, key, bytes, 0);
    } catch (err) {
      if (!isDroverError(err, ErrorCode.FailedPrecondition)) throw err;
      // A deleted key keeps its delete marker: create on top of that, and only of that.
      const cur = await this.read(key);
      if (cur.value !== null || cur.revision === 0) throw exists(err);
      return this.conditional(`create ${key}`, key, bytes, cur.revision).catch((e: unknown) => {
        throw isDroverError(e, ErrorCode.FailedPrecondition) ? exists(e) : e;
      });
    }
  }

  /**
   * Compare-and-set: write only if the key's last revision is still `revision`. A stale
   * revision is FAILED_PRECONDITION (retryable: re-read and try again) with `{key, revision}`.
   */
  async update(key: string, value: T, revision: number): Promise<number> {
    validateKey(key);
    const bytes = encoder.encode(JSON.stringify(value));
    return this.conditional(`update ${key}`, key, bytes, checkRevision(revision));
  }

  /**
   * Read-modify-write with CAS retry. `fn` gets the current value (null if absent) and returns
   * the next one, or null to delete. `fn` may run several times, so it must be pure. Returns the
   * written value and revision, or null when the key ends up absent. After `retries` conflicts,
   * throws FAILED_PRECONDITION (retryable).
   */
  async mutate(
    key: string,
    fn: (current: T | null) => T | null,
    options: MutateOptions = {},
  ): Promise<Versioned<T> | null> {
    const retries = options.retries ?? 50;
    // Only a write that lost a race is tried again: an error of the read or of `fn` (a lease
    // held by someone else, say) is the caller's answer.
    let writing = false;
    return retry(
      async () => {
        writing = false;
        const cur = await this.read(key);
        const next = fn(cur.value);
        writing = true;
        if (next === null) {
          if (cur.value !== null) await this.conditional(`delete ${key}`, key, null, cur.revision);
          return null;
        }
        // Revision 0 means "never written": the server checks the key has no message at all.
        const bytes = encoder.encode(JSON.stringify(next));
        const revision = await this.conditional(`update ${key}`, key, bytes, cur.revision);
        return { value: next, revision };
      },
      {
        tries: retries + 1,
        // Jittered backoff so a crowd of writers does not collide in lockstep.
        pauseMs: (n) => Math.random() * Math.min(50, 2 + (n - 1) * 5),
        retryIf: (err) =>
          writing &&
          err instanceof DroverError &&
          err.code === ErrorCode.FailedPrecondition &&
          err.retryable,
      },
    );
  }

  /**
   * Delete a key (a soft delete: watchers see it). Deleting an absent key is not an error.
   * With `revision`, delete only if that is still the key's last revision (FAILED_PRECONDITION if not).
   */
  async delete(key: string, revision?: number): Promise<void> {
    validateKey(key);
    if (revision !== undefined) {
      await this.conditional(`delete ${key}`, key, null, checkRevision(revision));
      return;
    }
    await this.retrying(`delete ${key}`, { key }, () => this.kv.delete(key));
  }

  /** Live keys, optionally matching a subject-style filter (`jobs.*`, `hosts.>`). */
  async keys(filter = '>'): Promise<string[]> {
    validateFilter(filter);
    return this.retrying(`keys ${filter}`, { filter }, async () => {
      const out: string[] = [];
      for await (const k of await this.kv.keys(filter)) out.push(k);
      return out;
    });
  }

  /**
   * Every live key with its value and revision. Not an atomic snapshot: keys are listed, then
   * read one by one; use the revisions with `update` to act on what was read.
   */
  async list(filter = '>'): Promise<Map<string, Versioned<T>>> {
    const out = new Map<string, Versioned<T>>();
    for (const key of await this.keys(filter)) {
      const v = await this.get(key);
      if (v !== null) out.set(key, v);
    }
    return out;
  }

  /**
   * Watch every key (one `>` filter: 2.9.10 has no multi-filter watch). `onChange` gets the new
   * value, or null for a delete/purge, with the revision. Resolves once the watch is in place;
   * the returned function stops it.
   */
  async watch(
    onChange: (key: string, value: T | null, revision: number) => void,
    options: WatchOptions = {},
  ): Promise<() => void> {
    let iter;
    try {
      iter = await this.kv.watch({
        key: '>',
        include: options.includeExisting ? KvWatchInclude.LastValue : KvWatchInclude.UpdatesOnly,
      });
    } catch (err) {
      throw mapJetStreamError(`watch ${this.bucket}`, err, { bucket: this.bucket });
    }
    void (async () => {
      for await (const e of iter) {
        try {
          onChange(e.key, e.operation === 'PUT' ? decode<T>(e) : null, e.revision);
        } catch (err) {
          options.onError?.(mapJetStreamError(`watch callback for ${e.key}`, err, { key: e.key }));
        }
      }
    })();
    return () => iter.stop();
  }

  private async read(key: string): Promise<RawRead<T>> {
    validateKey(key);
    const e = await this.retrying(`get ${key}`, { key }, () => this.kv.get(key));
    if (e === null) return { value: null, revision: 0 };
    // A delete leaves a marker with its own revision: the key reads as absent.
    return { value: e.operation === 'PUT' ? decode<T>(e) : null, revision: e.revision };
  }

  /**
   * Write `bytes` (null: a delete marker) only if `revision` is still the key's last revision
   * (0: the key has no message). A stale revision is FAILED_PRECONDITION (retryable).
   *
   * The server checks the revision of writes in flight too, on replicated streams as well
   * (nats-server >= 2.12; 2.9.x let concurrent writes of one revision all pass on an R3 stream:
   * cluster.test.ts shows the difference). The write id tells a retry whose first try landed (its
   * answer lost with a server) from a rival's write.
   */
  private async conditional(
    what: string,
    key: string,
    bytes: Uint8Array | null,
    revision: number,
  ): Promise<number> {
    const subject = this.subjectOf(key);
    // Tells our own earlier try from a rival's write (with the same bytes, maybe). If a later
    // write replaced ours already, we cannot tell: a conflict, and mutate reads again.
    const writeId = randomUUID();
    return this.retrying(what, { key }, async (retry) => {
      const h = headers();
      h.set(WRITE_ID_HEADER, writeId);
      if (bytes === null) h.set('KV-Operation', 'DEL');
      let ack;
      try {
        ack = await this.js.publish(subject, bytes ?? Empty, {
          headers: h,
          expect: { lastSubjectSequence: revision },
        });
      } catch (err) {
        if (retry && isConflict(err)) {
          const last = await this.message(key);
          // Our earlier try landed; or, for a delete, the key is deleted anyway.
          if (last !== null && last.header?.get(WRITE_ID_HEADER) === writeId) return last.seq;
          if (bytes === null && (last === null || last.header?.get('KV-Operation'))) return 0;
        }
        throw conflictOr(what, err, key, revision);
      }
      return ack.seq;
    });
  }

  /** The stored message of `key` at `seq`, or its last one; null if there is none. */
  private async message(key: string, seq?: number): Promise<StoredMsg | null> {
    const subject = this.subjectOf(key);
    const m = await this.jsm.streams.getMessage(
      this.stream,
      seq === undefined ? { last_by_subj: subject } : { seq },
    );
    return m !== null && m.subject === subject ? m : null;
  }

  private subjectOf(key: string): string {
    return `$KV.${this.bucket}.${key}`;
  }

  private retrying<R>(
    what: string,
    details: Record<string, unknown>,
    attempt: (retry: boolean) => Promise<R>,
  ): Promise<R> {
    return retryUnavailable(what, this.retryForMs, attempt, details);
  }
}

function conflictOr(what: string, err: unknown, key: string, revision: number): DroverError {
  if (isConflict(err)) {
    return new DroverError(ErrorCode.FailedPrecondition, `${what}: revision ${revision} is stale`, {
      retryable: true,
      cause: err,
      details: { key, revision },
    });
  }
  return mapJetStreamError(what, err, { key });
}

function checkRevision(revision: number): number {
  if (!Number.isSafeInteger(revision) || revision <= 0) {
    throw new DroverError(ErrorCode.InvalidArgument, `revision must be a positive integer`, {
      details: { revision },
    });
  }
  return revision;
}

function decode<T>(e: KvEntry): T {
  try {
    return e.json<T>();
  } catch (err) {
    throw new DroverError(ErrorCode.Internal, `state key ${e.key} holds undecodable JSON`, {
      cause: err,
      details: { key: e.key, revision: e.revision },
    });
  }
}
