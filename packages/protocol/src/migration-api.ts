/** Live migration between agents: modes, states, records and the messages agents exchange. */
import type { Failure } from './failure.js';
import { commandSchema } from './command.js';
import { ID_PATTERN, ID_WHAT } from './names.js';
import { arr, bool, dict, int, obj, oneOf, opt, str, type Schema } from './schema.js';
import { JOB_ADDRESS_SCHEMA, macFor, type JobNetwork } from './job-network.js';
import { CHECKPOINT_OPTIONS_SCHEMA, type CheckpointOptions } from './checkpoint-options.js';

/** How memory moves. */
export const MigrationMode = {
  auto: 'auto',
  stopCopy: 'stop-copy',
  postCopy: 'post-copy',
  preCopy: 'pre-copy',
} as const;
export type MigrationMode = (typeof MigrationMode)[keyof typeof MigrationMode];
export const MIGRATION_MODES = ['auto', 'stop-copy', 'post-copy', 'pre-copy'] as const;

/**
 * Migration states (see docs/MIGRATION.md for who moves between them).
 * Source: preparing → frozen → dumping → transferring → awaiting → committing → done,
 * or → rolled-back; `in-doubt` when the destination cannot be asked whether it runs the job.
 * Destination: prepared → receiving → restoring → running → done, or → aborted.
 */
export const MigrationState = {
  preparing: 'preparing',
  prepared: 'prepared',
  frozen: 'frozen',
  dumping: 'dumping',
  transferring: 'transferring',
  awaiting: 'awaiting',
  receiving: 'receiving',
  restoring: 'restoring',
  running: 'running',
  committing: 'committing',
  done: 'done',
  rolledBack: 'rolled-back',
  aborted: 'aborted',
  inDoubt: 'in-doubt',
} as const;
export type MigrationState = (typeof MigrationState)[keyof typeof MigrationState];

/** Figures of one migration (the ones P.Haul and `podman --print-stats` report). */
export interface MigrationStats {
  /** Time the job was frozen: its downtime. */
  frozenMs: number;
  dumpMs: number;
  transferMs: number;
  restoreMs: number;
  totalMs: number;
  bytes: number;
  files: number;
  /** Memory pages in the image (4 KiB each). */
  pages: number;
  /**
   * Connections still in flight (in a listener's queue, or half-open) when the job was frozen:
   * the dump drops them and their clients see a reset (docs/NETWORK.md). Jobs with their own
   * address only.
   */
  inFlightDropped?: number;
}

/** A migration as either agent records it. */
export interface MigrationRecord {
  migrationId: string;
  jobId: string;
  role: 'source' | 'destination';
  source: string;
  destination: string;
  mode: Exclude<MigrationMode, 'auto'>;
  state: MigrationState;
  startedAt: string;
  updatedAt: string;
  /** Phase timestamps (ms since start), for a per-phase timeline. */
  timeline: { phase: string; atMs: number }[];
  stats: MigrationStats;
  error: Failure | null;
  note: string | null;
}

/** Phases a source agent reports while it moves a job. */
export const MIGRATION_PROGRESS_PHASES = [
  'prepared',
  'dumping',
  'dumped',
  'transferring',
  'pulling-pages',
  'done',
] as const;
export type MigrationProgressPhase = (typeof MIGRATION_PROGRESS_PHASES)[number];

/**
 * What a source agent publishes on `drover.evt.<host>.migration` as a migration goes: each phase
 * once, `dumping` every second while pages flow, and `transferring` every ~200 ms while image
 * bytes flow.
 */
export interface MigrationProgressEvent {
  migrationId: string;
  jobId: string;
  destination: string;
  phase: MigrationProgressPhase;
  /** `dumped`: how long CRIU took. */
  dumpMs?: number;
  /**
   * `dumped`, `transferring`: bytes the stream carries in all (images and the job's directory).
   * `dumping`: the job's memory, which bounds the pages CRIU sends (an estimate: CRIU skips
   * pages never touched).
   */
  totalBytes?: number;
  /** `transferring`: bytes sent so far. `dumping`: page bytes the destination has acknowledged. */
  bytes?: number;
  /** `transferring`, `dumping`: average rate since the bytes began to flow. */
  rateBytesPerSec?: number;
  /** `dumped`: page bytes that went to the destination's page server while CRIU dumped. */
  pageBytes?: number;
  /** `done`: the migration's figures. */
  stats?: MigrationStats;
}

/** What the destination needs to know about the job it will receive. */
export interface MigratingJob {
  id: string;
  name: string;
  kind: 'namespaced' | 'adopted';
  command: string[];
  cwd: string;
  env: Record<string, string>;
  hostname: string | null;
  memoryLimitBytes: number | null;
  shellJob: boolean;
  startedAt: string;
  jobDir: string;
  network: JobNetwork;
  checkpointOptions: CheckpointOptions;
  until: 'main' | 'all';
  mainPidfile: string | null;
  tty: boolean;
}

const id = (): Schema<string> => str({ min: 1, max: 63, pattern: ID_PATTERN, what: ID_WHAT });

/**
 * A migration ticket: the secret with which the controller authorizes one migration on its
 * destination (`migrate-authorize`), and which the source must then present in `migrate-prepare`.
 * The controller makes it (32 random bytes, hex); the schema takes 32 to 128 URL-safe characters.
 */
const ticket = (): Schema<string> => str({ min: 32, max: 128, pattern: /^[A-Za-z0-9_-]+$/ });

/** How long an authorization waits for its `migrate-prepare` by default, and at most. */
export const MIGRATION_TICKET_TTL_MS = 60_000;
export const MAX_MIGRATION_TICKET_TTL_MS = 10 * 60_000;

/** Schema of MigratingJob on the wire. */
export const migratingJobSchema = obj({
  id: id(),
  name: str({ min: 1, max: 128 }),
  kind: oneOf(['namespaced', 'adopted'] as const),
  command: commandSchema(),
  cwd: str({ min: 1, max: 4096, pattern: /^\// }),
  env: dict(str({ max: 8192 }), {
    maxKeys: 256,
    key: str({ min: 1, max: 256, pattern: /^[A-Za-z_][A-Za-z0-9_]*$/ }),
  }),
  hostname: opt(str({ min: 1, max: 63 })),
  memoryLimitBytes: opt(int()),
  shellJob: bool(),
  startedAt: str({ max: 64 }),
  jobDir: str({ min: 1, max: 4096, pattern: /^\// }),
  /** The job's own address (it keeps it on the destination); absent: the host's network. */
  address: opt(JOB_ADDRESS_SCHEMA),
  /** The job's own CRIU options, its lifetime and terminal (absent: the defaults). */
  checkpointOptions: opt(CHECKPOINT_OPTIONS_SCHEMA),
  until: opt(oneOf(['main', 'all'] as const)),
  mainPidfile: opt(str({ min: 2, max: 4096, pattern: /^\// })),
  tty: opt(bool()),
});

/** Migration operations served by every agent. */
export const MigrationOps = {
  /**
   * On the destination, from the controller only (agents may not send it, see `AGENT_PEER_OPS`):
   * allow one incoming migration of `jobId` from `source`, proven by `ticket`, for `ttlMs`.
   */
  'migrate-authorize': obj({
    jobId: id(),
    source: id(),
    ticket: ticket(),
    ttlMs: opt(int({ min: 1, max: MAX_MIGRATION_TICKET_TTL_MS })),
  }),
  /** On the source: move a job to `destination`, which the controller authorized with `ticket`. */
  migrate: obj({
    jobId: id(),
    destination: id(),
    ticket: ticket(),
    mode: opt(oneOf(MIGRATION_MODES)),
    /** Move even if preflight finds reasons (the operator knows better). */
    force: opt(bool()),
  }),
  /** On the destination: get ready to receive (capacity, abilities, a one-time stream token). */
  'migrate-prepare': obj({
    migrationId: id(),
    source: id(),
    /** The controller's ticket (see `migrate-authorize`); the destination consumes it. */
    ticket: ticket(),
    mode: oneOf(['stop-copy', 'post-copy', 'pre-copy'] as const),
    job: migratingJob(),
    memoryBytes: int(),
    cpuFlags: arr(str({ max: 64 }), { max: 1024 }),
    pids: arr(int({ min: 1 }), { max: 65536 }),
    /** post-copy: the source's page server, which the destination's lazy-pages daemon reads. */
    pageServer: opt(obj({ host: str({ min: 1, max: 255 }), port: int({ min: 1, max: 65535 }) })),
    /**
     * stop-copy: the address the source's CRIU connects to the destination's page server from
     * (the only one the destination admits to it).
     */
    pageFrom: opt(str({ min: 1, max: 255 })),
  }),
  /**
   * The rest of the handshake names the migration and proves its part in it with the ticket the
   * controller gave both sides: a third agent that learns a migration's id can do nothing with it.
   * On the destination: give up (kill what was restored unless committed, clean up).
   */
  'migrate-abort': obj({ migrationId: id(), ticket: ticket() }),
  /** On the destination: the source has discarded its copy. */
  'migrate-commit': obj({ migrationId: id(), ticket: ticket() }),
  /** On either: the record of a migration. */
  'migrate-status': obj({ migrationId: id(), ticket: ticket() }),
  'migrations-list': obj({}),
  /**
   * On the source, from the controller only: this host's record of the migration of `jobId` the
   * controller authorized with `ticket` (how a failed migration's phases and CRIU's error lines
   * reach the operator: the `migrate` call that failed carries only the error).
   */
  'migrate-find': obj({ jobId: id(), ticket: ticket() }),
} as const;

function migratingJob(): Schema<MigratingJob> {
  const s = migratingJobSchema;
  return {
    kind: 'object',
    parse(v, path) {
      const { address, ...p } = s.parse(v, path);
      return {
        ...p,
        hostname: p.hostname ?? null,
        memoryLimitBytes: p.memoryLimitBytes ?? null,
        checkpointOptions: p.checkpointOptions ?? {},
        until: p.until ?? 'main',
        mainPidfile: p.mainPidfile ?? null,
        tty: p.tty ?? false,
        network: address
          ? {
              mode: 'job',
              address: address.address,
              prefixLength: address.prefixLength,
              gateway: address.gateway ?? null,
              mac: macFor(address.address),
            }
          : { mode: 'host' },
      };
    },
  };
}

/** Replies of the migration operations. */
export interface MigrationReplies {
  /** When the authorization lapses (the destination's clock). */
  'migrate-authorize': { expiresAt: string };
  migrate: MigrationRecord;
  'migrate-prepare': {
    streamHost: string;
    streamPort: number;
    token: string;
    scratchDir: string;
    /** stop-copy: the destination's page server, which the source's dump sends pages to. */
    pages?: { host: string; port: number };
    /** post-copy: the address the destination's lazy-pages daemon connects from. */
    pageFrom?: string;
  };
  'migrate-abort': MigrationRecord;
  'migrate-commit': MigrationRecord;
  'migrate-status': MigrationRecord;
  'migrations-list': { migrations: MigrationRecord[] };
  'migrate-find': MigrationRecord;
}
