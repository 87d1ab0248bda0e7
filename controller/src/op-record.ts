/**
 * Operation records as the controller writes them: one type per operation kind (a union on
 * `kind`, each with the fields its kind always has), built by {@link newOperation} and narrowed
 * from what a bucket holds by {@link asKind}; and {@link OpHandle}, the compare-and-set updates of
 * one record. The wire type (`OperationRecord` in `@drover/protocol`) stays the one loose shape
 * every reader (the CLI, the console) sees; each of these is one of its shapes.
 */
import type { StateStore } from '@drover/bus';
import { DroverError, ErrorCode } from '@drover/common';
import {
  errorToFailure,
  type ClusterPhase,
  type DrainItem,
  type MemberItem,
  type OperationRecord,
} from '@drover/protocol';

/** The part of a state bucket the operations use (tests supply an in-memory one). */
export type Records<T> = Pick<
  StateStore<T>,
  'get' | 'put' | 'create' | 'mutate' | 'delete' | 'list'
>;

/** A migration of one job. */
export type MigrateRecord = OperationRecord & { kind: 'migrate' };

/** A drain of one host: each job's outcome. */
export type DrainRecord = OperationRecord & { kind: 'drain'; host: string; items: DrainItem[] };

/** What a cluster checkpoint and a restore both record: the set, the phase, each job. */
interface ClusterFields {
  imageSet: string;
  phase: ClusterPhase;
  members: MemberItem[];
  phases: { phase: ClusterPhase; atMs: number }[];
}

/** A cluster checkpoint (`drover checkpoint`). */
export type CheckpointRecord = OperationRecord & ClusterFields & { kind: 'checkpoint' };

/** A restore of an image set (`drover restore`). */
export type RestoreRecord = OperationRecord & ClusterFields & { kind: 'restore' };

/** Either cluster operation. */
export type ClusterRecord = CheckpointRecord | RestoreRecord;

/** Every operation, by kind. */
export type OpRecord = MigrateRecord | DrainRecord | CheckpointRecord | RestoreRecord;

type OpKind = OpRecord['kind'];
type RecordOf<K extends OpKind> = Extract<OpRecord, { kind: K }>;

/** The fields a new operation of any kind starts with. */
type Common = 'opId' | 'kind' | 'state' | 'createdAt' | 'updatedAt' | 'error';

/**
 * A new `running` operation of `kind`, created now: what its kind needs (`request`, `placement`,
 * `migration` default to nothing asked, no placement, no migration).
 */
export function newOperation<K extends OpKind>(
  kind: K,
  opId: string,
  fields: Omit<RecordOf<K>, Common | 'request' | 'placement' | 'migration'> &
    Partial<Pick<OperationRecord, 'request' | 'placement' | 'migration'>>,
): RecordOf<K> {
  const now = new Date().toISOString();
  return {
    opId,
    kind,
    state: 'running',
    createdAt: now,
    updatedAt: now,
    request: {},
    placement: null,
    migration: null,
    error: null,
    ...fields,
  } as RecordOf<K>;
}

/** `r` as an operation of `kind`; INTERNAL when it is another kind or lacks what its kind has. */
export function asKind<K extends OpKind>(r: OperationRecord, kind: K): RecordOf<K> {
  const ok =
    r.kind === kind &&
    (kind === 'migrate' ||
      (kind === 'drain'
        ? typeof r.host === 'string' && Array.isArray(r.items)
        : typeof r.imageSet === 'string' &&
          typeof r.phase === 'string' &&
          Array.isArray(r.members)));
  if (!ok) {
    throw new DroverError(ErrorCode.Internal, `operation ${r.opId} is not a well-formed ${kind}`, {
      details: { opId: r.opId, kind: r.kind },
    });
  }
  // Records written before `phases` existed have none.
  return (kind === 'checkpoint' || kind === 'restore' ? { phases: [], ...r } : r) as RecordOf<K>;
}

/** Compare-and-set updates of one operation record of type `R` (one kind). */
export class OpHandle<R extends OpRecord> {
  constructor(
    private readonly ops: Pick<Records<OperationRecord>, 'get' | 'mutate'>,
    readonly opId: string,
    readonly kind: R['kind'],
  ) {}

  async read(): Promise<R> {
    const r = await this.ops.get(this.opId);
    if (!r) throw new DroverError(ErrorCode.NotFound, `no operation ${this.opId}`);
    return this.narrow(r.value);
  }

  /** Apply `fn` to the record as it is now (compare-and-set: retried on a concurrent write). */
  async update(fn: (o: R) => R): Promise<R> {
    const r = await this.ops.mutate(this.opId, (cur) =>
      cur ? { ...fn(this.narrow(cur)), updatedAt: new Date().toISOString() } : null,
    );
    if (!r) throw new DroverError(ErrorCode.NotFound, `no operation ${this.opId}`);
    return this.narrow(r.value);
  }

  private narrow(r: OperationRecord): R {
    const o: OpRecord = asKind(r, this.kind);
    return o as R;
  }
}

/** Updates of a cluster checkpoint's or restore's record: its jobs and its phases. */
export class ClusterOpHandle<R extends ClusterRecord> extends OpHandle<R> {
  member(jobId: string, patch: Partial<MemberItem>): Promise<R> {
    return this.update((o) => ({
      ...o,
      members: o.members.map((m) => (m.jobId === jobId ? { ...m, ...patch } : m)),
    }));
  }

  /** Record the first error and enter `rolling-back` (once: a resumed rollback keeps both). */
  async rollingBack(cause: DroverError): Promise<R> {
    const cur = await this.read();
    if (cur.phase === 'rolling-back') return cur;
    // In full (causes, rollback errors): `drover status OP` shows why.
    await this.update((o) => ({ ...o, error: errorToFailure(cause) }));
    return this.phase('rolling-back');
  }

  /** Enter `phase`; `fn` changes the record in the same write. */
  phase(phase: ClusterPhase, fn: (o: R) => R = (o) => o): Promise<R> {
    return this.update((cur) => {
      const o = fn(cur);
      return {
        ...o,
        phase,
        phases: [...o.phases, { phase, atMs: Date.now() - Date.parse(o.createdAt) }],
      };
    });
  }

  /** Apply several jobs' patches in one write. */
  members(patches: ReadonlyMap<string, Partial<MemberItem>>): Promise<R> {
    return this.update((o) => patchMembers(o, patches));
  }

  /** End a rolled-back operation: failed, with `message` for what was undone. */
  rolledBack(cause: DroverError, message: string): Promise<R> {
    return this.update((o) => ({
      ...o,
      state: 'failed',
      phase: 'finished',
      error: { ...errorToFailure(cause), message },
      members: o.members.map((m) => ({ ...m, state: 'rolled-back' as const })),
    }));
  }
}

/** The `limit` newest operations, newest first. */
export async function newestOperations(
  ops: StateStore<OperationRecord>,
  limit: number,
): Promise<{ ops: OperationRecord[] }> {
  const all = [...(await ops.list()).values()].map((v) => v.value);
  all.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  return { ops: all.slice(0, limit) };
}

/** Operation `opId`; NOT_FOUND when there is none. */
export async function readOperation(
  ops: StateStore<OperationRecord>,
  opId: string,
): Promise<OperationRecord> {
  const r = await ops.get(opId);
  if (!r) throw new DroverError(ErrorCode.NotFound, `no operation ${opId}`, { details: { opId } });
  return r.value;
}

/**
 * Writes made behind the work that produces them: `add` returns at once; what was added is
 * written in as few writes as it comes in (one write at a time, each with everything that waited,
 * a key's values merged). `flush` waits for all of it; after a failed write nothing more is
 * written, and `pending` keeps what was not (for another write to carry, a phase's).
 */
export class BatchedWrites<T> {
  #pending = new Map<string, T>();
  #running: Promise<void> | null = null;
  #error: unknown = null;

  constructor(
    private readonly write: (batch: ReadonlyMap<string, T>) => Promise<unknown>,
    private readonly merge: (older: T | undefined, newer: T) => T = (_, newer) => newer,
  ) {}

  add(key: string, value: T): void {
    this.#pending.set(key, this.merge(this.#pending.get(key), value));
    this.#running ??= this.#drain();
  }

  /** Wait for everything added so far to be written; the failed write's error, if one failed. */
  async flush(): Promise<void> {
    while (this.#running) await this.#running;
    if (this.#error !== null) throw this.#error;
  }

  /** What is not written (yet, or after a failed write). */
  pending(): ReadonlyMap<string, T> {
    return this.#pending;
  }

  async #drain(): Promise<void> {
    while (this.#pending.size > 0 && this.#error === null) {
      const batch = this.#pending;
      this.#pending = new Map();
      try {
        await this.write(batch);
      } catch (err) {
        this.#error = err;
        // Kept; values added since are newer.
        for (const [k, v] of batch) {
          const newer = this.#pending.get(k);
          this.#pending.set(k, newer === undefined ? v : this.merge(v, newer));
        }
      }
    }
    this.#running = null;
  }
}

/** Jobs' patches of `op`, written behind the work (BatchedWrites); `apply` folds in the rest. */
export function memberWrites<R extends ClusterRecord>(
  op: ClusterOpHandle<R>,
): BatchedWrites<Partial<MemberItem>> & { apply: (o: R) => R } {
  const w = new BatchedWrites<Partial<MemberItem>>(
    (batch) => op.members(batch),
    (older, newer) => ({ ...older, ...newer }),
  );
  return Object.assign(w, { apply: (o: R): R => patchMembers(o, w.pending()) });
}

/** `o` with each job's patch in `patches` applied. */
function patchMembers<R extends ClusterRecord>(
  o: R,
  patches: ReadonlyMap<string, Partial<MemberItem>>,
): R {
  if (patches.size === 0) return o;
  return {
    ...o,
    members: o.members.map((m) => {
      const patch = patches.get(m.jobId);
      return patch ? { ...m, ...patch } : m;
    }),
  };
}
