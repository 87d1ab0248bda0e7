/** Typed JSON state in one JetStream KV bucket: reads, compare-and-set writes, mutate, watch. */
import {
  jetstream,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
} from '@nats-io/jetstream';
import { Kvm, KvWatchInclude, type KV, type KvEntry } from '@nats-io/kv';
import { errors as natsErrors } from '@nats-io/nats-core';
import { DroverError, ErrorCode } from '@drover/common';
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
    /timeout|no responders|closed|disconnect|unavailable/i.test(String(err));
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

/** Raw read: the live value (null if absent or deleted) and the key's last revision (0 if never written). */
interface RawRead<T> {
  value: T | null;
  revision: number;
}

/**
 * Typed JSON state in one KV bucket. Writes are compare-and-set by revision where it matters;
 * per-key TTL is not used (nats-server 2.9.10 ignores it), so expiry is the caller's business.
 */
export class StateStore<T> {
  private constructor(
    private readonly kv: KV,
    /** The bucket name. */
    readonly bucket: string,
  ) {}

  /** Open the bucket, creating it if missing. UNAVAILABLE (retryable) when JetStream does not answer. */
  static async open<T>(bus: Bus, options: StateStoreOptions): Promise<StateStore<T>> {
    const timeout = options.timeoutMs ?? 2000;
    const js: JetStreamClient = jetstream(bus.nc, { timeout });
    try {
      const kv = await new Kvm(js).create(options.bucket, {
        replicas: options.replicas ?? 1,
        history: options.history ?? 1,
        timeout,
      });
      return new StateStore<T>(kv, options.bucket);
    } catch (err) {
      throw mapJetStreamError(`cannot open state bucket ${options.bucket}`, err, {
        bucket: options.bucket,
      });
    }
  }

  /** The live value and its revision, or null when the key is absent or deleted. */
  async get(key: string): Promise<Versioned<T> | null> {
    const r = await this.read(key);
    return r.value === null ? null : { value: r.value, revision: r.revision };
  }

  /** Write unconditionally (last writer wins). Returns the new revision. */
  async put(key: string, value: T): Promise<number> {
    validateKey(key);
    try {
      return await this.kv.put(key, encoder.encode(JSON.stringify(value)));
    } catch (err) {
      throw mapJetStreamError(`put ${key}`, err, { key });
    }
  }

  /** Write only if the key is absent (or deleted); ALREADY_EXISTS otherwise. Returns the revision. */
  async create(key: string, value: T): Promise<number> {
    validateKey(key);
    try {
      return await this.kv.create(key, encoder.encode(JSON.stringify(value)));
    } catch (err) {
      if (isConflict(err)) {
        throw new DroverError(ErrorCode.AlreadyExists, `state key ${key} already exists`, {
          cause: err,
          details: { key },
        });
      }
      throw mapJetStreamError(`create ${key}`, err, { key });
    }
  }

  /**
   * Compare-and-set: write only if the key's last revision is still `revision`. A stale
   * revision is FAILED_PRECONDITION (retryable: re-read and try again) with `{key, revision}`.
   */
  async update(key: string, value: T, revision: number): Promise<number> {
    return this.casPut(key, value, checkRevision(revision));
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
    for (let attempt = 0; ; attempt++) {
      const cur = await this.read(key);
      const next = fn(cur.value);
      try {
        if (next === null) {
          if (cur.value !== null) await this.casDelete(key, cur.revision);
          return null;
        }
        // Revision 0 means "never written": the server checks the key has no message at all.
        const revision = await this.casPut(key, next, cur.revision);
        return { value: next, revision };
      } catch (err) {
        const conflict =
          err instanceof DroverError && err.code === ErrorCode.FailedPrecondition && err.retryable;
        if (!conflict || attempt >= retries) throw err;
        // Jittered backoff so a crowd of writers does not collide in lockstep.
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(50, 2 + attempt * 5)));
      }
    }
  }

  /**
   * Delete a key (a soft delete: watchers see it). Deleting an absent key is not an error.
   * With `revision`, delete only if that is still the key's last revision (FAILED_PRECONDITION if not).
   */
  async delete(key: string, revision?: number): Promise<void> {
    validateKey(key);
    if (revision !== undefined) return this.casDelete(key, checkRevision(revision));
    try {
      await this.kv.delete(key);
    } catch (err) {
      throw mapJetStreamError(`delete ${key}`, err, { key });
    }
  }

  /** Live keys, optionally matching a subject-style filter (`jobs.*`, `hosts.>`). */
  async keys(filter = '>'): Promise<string[]> {
    validateFilter(filter);
    try {
      const out: string[] = [];
      for await (const k of await this.kv.keys(filter)) out.push(k);
      return out;
    } catch (err) {
      throw mapJetStreamError(`keys ${filter}`, err, { filter });
    }
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
    let e: KvEntry | null;
    try {
      e = await this.kv.get(key);
    } catch (err) {
      throw mapJetStreamError(`get ${key}`, err, { key });
    }
    if (e === null) return { value: null, revision: 0 };
    // A delete leaves a marker with its own revision: the key reads as absent.
    return { value: e.operation === 'PUT' ? decode<T>(e) : null, revision: e.revision };
  }

  private async casPut(key: string, value: T, revision: number): Promise<number> {
    validateKey(key);
    try {
      return await this.kv.put(key, encoder.encode(JSON.stringify(value)), {
        previousSeq: revision,
      });
    } catch (err) {
      throw conflictOr(`update ${key}`, err, key, revision);
    }
  }

  private async casDelete(key: string, revision: number): Promise<void> {
    try {
      await this.kv.delete(key, { previousSeq: revision });
    } catch (err) {
      throw conflictOr(`delete ${key}`, err, key, revision);
    }
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
