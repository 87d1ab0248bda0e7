/** The controller's request/reply API (`drover.ctl.<op>`: names.ts), used by the `drover` CLI. */
import {
  AgentOps,
  LOG_RANGE,
  type AgentReplies,
  type ImageFile,
  type AgentInfo,
  type JobInfo,
  type LogChunk,
  type PreflightReport,
} from './agent-api.js';
import type { Failure } from './failure.js';
import type { ImageContents } from './image-contents.js';
import { signalSchema } from './signals.js';
import { IDENTITY_NAME_PATTERN } from './identity.js';
import { MIGRATION_MODES, type MigrationRecord } from './migration-api.js';
import { ID_PATTERN, ID_WHAT } from './names.js';
import { IPV4_PATTERN, type JobNetwork } from './job-network.js';
import { arr, bool, int, obj, oneOf, opt, str, type Infer, type Schema } from './schema.js';
import { pageFields } from './paging.js';

const id = (): Schema<string> => str({ min: 1, max: 63, pattern: ID_PATTERN, what: ID_WHAT });

/**
 * One record of the audit stream. Each request that changes something gets two, sharing `id`:
 * `asked` (written before the controller acts; no record, no action) and `answered`.
 */
export interface AuditEntry {
  id: string;
  phase: 'asked' | 'answered';
  op: string;
  /** Who asked: from the request's subject, which NATS checked against the caller's certificate. */
  caller: {
    role: string;
    name: string;
    /** True when the controller runs on NATS with TLS and roles (the name was enforced). */
    verified: boolean;
  };
  /** The controller that served it. */
  controller: string;
  /** `asked`: the request, with secrets (job environment values) replaced by `***`. */
  request?: unknown;
  /** `answered`: `ok` or the error code, its message, the id of what it made or acted on (an
   * operation, a job), the time taken. */
  outcome?: string;
  message?: string;
  resultId?: string;
  durationMs?: number;
}

/** The host an `unanswered` entry of a list names (`host (why)`). */
export function unansweredHost(entry: string): string {
  const sp = entry.indexOf(' ');
  return sp < 0 ? entry : entry.slice(0, sp);
}

/** A host as the controller sees it. */
export interface HostStatus {
  host: string;
  reachable: boolean;
  cordoned: boolean;
  lastSeen: string;
  info: AgentInfo;
}

/** A job as the controller sees it (with the host it runs on). */
export type ClusterJob = JobInfo;

/** One job of a drain, as it moves. */
export interface DrainItem {
  jobId: string;
  name: string;
  state: 'pending' | 'moving' | 'done' | 'failed' | 'skipped';
  destination: string | null;
  /** Why it was skipped or failed (preflight's reasons, the migration's error). */
  reason: string | null;
  /** The error code of a failure (`FAILED_PRECONDITION` for a job that cannot move, ...). */
  code?: string;
  migrationId: string | null;
  frozenMs: number | null;
  /** Moves tried so far (a transient failure is tried again). */
  attempts?: number;
}

/** One job of a cluster checkpoint or restore, as it moves through the phases. */
export interface MemberItem {
  jobId: string;
  name: string;
  /** checkpoint: where the job ran; restore: where it is restored. */
  host: string;
  state:
    | 'pending'
    | 'frozen'
    | 'dumped'
    | 'stored'
    | 'fetched'
    | 'restored'
    | 'done'
    | 'failed'
    | 'rolled-back';
  imageId: string;
  /** Epoch ms (the host's clock) when the job was frozen for the cut. */
  frozenAtMs: number | null;
  dumpMs: number | null;
  sizeBytes: number | null;
  reason: string | null;
}

/** How one host froze its jobs of a cluster checkpoint's cut. */
export interface HostFreeze {
  host: string;
  jobIds: string[];
  /** Requests it took: 1 (`freeze-many`), or one per job for an agent from before it. */
  requests: number;
  /** Between its first and its last job frozen (ms, the host's clock). */
  skewMs: number;
  /** A scheduled cut: between its first and its last job's freeze requested (ms). */
  requestSkewMs?: number;
  /**
   * A scheduled cut (absent: frozen when the request came): the instant in this host's clock,
   * its clock's estimated offset from the controller's (host minus controller, ms) and the
   * round trip of the exchange it was estimated from, how long after the instant its cut
   * timer requested the freezes (`issuedLateMs`) and its last job was seen frozen (`lateMs`).
   */
  cutAtMs?: number;
  offsetMs?: number;
  rttMs?: number;
  issuedLateMs?: number;
  lateMs?: number;
  /** `--leave-running`: when its last job's cgroup was thawed (epoch ms, the host's clock). */
  thawedAtMs?: number;
}

/** How a cluster checkpoint's cut was scheduled (cluster-cut.ts in the controller). */
export interface CutPlan {
  /** The instant, in the controller's clock (epoch ms). */
  atMs: number;
  /** How far ahead of sending the requests it was chosen (ms). */
  marginMs: number;
  /** Plans it took: a host that could not arm the cut in time makes a later one. */
  attempts: number;
  /**
   * First to last job frozen on the controller's clock (each host's times less its estimated
   * offset): the skew across hosts whose clocks differ. `freezeSkewMs` takes the hosts' clocks
   * as they are.
   */
  skewMs: number;
  /** The same for the freezes' requests (`requestSkewMs`), on the controller's clock. */
  requestSkewMs?: number;
}

/** Phases of a cluster checkpoint (in order) and of a restore. */
export type ClusterPhase =
  | 'freezing'
  | 'dumping'
  | 'thawing'
  | 'storing'
  | 'stopping'
  | 'fetching'
  | 'restoring'
  | 'resuming'
  | 'rolling-back'
  | 'finished';

/** One job's image in an image set. */
export interface ImageSetJob {
  jobId: string;
  name: string;
  /** The host it was checkpointed on, with its CPU flags (a restore needs them). */
  host: string;
  cpuFlags: string[];
  /** Memory in use at the checkpoint: placement of a restore needs that much free. */
  memoryBytes: number;
  imageId: string;
  /** Objects `<set>/<job>/<file>` in the image-set bucket, with their checksums. */
  files: ImageFile[];
  sizeBytes: number;
  frozenAtMs: number;
  dumpMs: number;
  /** Its network at the cut: a restore gives it the same address back (sets made before: host). */
  network?: JobNetwork;
}

/** A named image set: a consistent cut of a set of jobs, stored in JetStream. */
export interface ImageSet {
  name: string;
  opId: string;
  /** `creating` until every image is stored; only `complete` sets can be restored. */
  state: 'creating' | 'complete';
  createdAt: string;
  completedAt: string | null;
  /** Whether the jobs kept running after the cut. */
  leaveRunning: boolean;
  /** Between the first and the last job's freeze (hosts' clocks). */
  freezeSkewMs: number | null;
  jobs: ImageSetJob[];
  sizeBytes: number;
}

/**
 * Why an operation failed: a wire `Failure` in full (its causes and the errors raised while
 * rolling back), or, for a verdict over many jobs (a drain's `PARTIAL`), a code and message.
 */
export type OperationError = { code: string; message: string } & Partial<
  Omit<Failure, 'code' | 'message'>
>;

/** A controller operation (migrate, drain, ...), persisted as it moves. */
export interface OperationRecord {
  opId: string;
  kind: 'migrate' | 'drain' | 'checkpoint' | 'restore';
  state: 'pending' | 'running' | 'done' | 'failed';
  createdAt: string;
  updatedAt: string;
  /** What was asked. */
  request: Record<string, unknown>;
  /** Where the job went and why that host (placement's explanation). */
  placement: string | null;
  /** migrate: the migration's record, a failed one's too (its phases, CRIU's error lines). */
  migration: MigrationRecord | null;
  error: OperationError | null;
  /** drain: the host being emptied, and each job's outcome. */
  host?: string;
  items?: DrainItem[];
  /** checkpoint/restore: the image set, the phase reached, and each job. */
  imageSet?: string;
  phase?: ClusterPhase;
  members?: MemberItem[];
  /** checkpoint: between the first and the last freeze (ms, hosts' clocks). */
  freezeSkewMs?: number | null;
  /**
   * checkpoint, a scheduled cut: between the first and the last job's freeze requested (ms,
   * hosts' clocks): the cut itself, since no job runs user code after its request
   * (docs/CHECKPOINT.md, "What the skew measures"); `freezeSkewMs` adds when each kernel said so.
   */
  requestSkewMs?: number | null;
  /** checkpoint: the barrier as each host did it (one request per host). */
  freezes?: HostFreeze[];
  /** checkpoint: the scheduled cut (null: unscheduled, a host without `clock`). */
  cut?: CutPlan | null;
  /**
   * checkpoint: how long the workload was frozen (ms): from the first job frozen to the last
   * thawed as the hosts report them, each host's clock less its estimated offset; where a host
   * reports no thaw time (an older agent) or the jobs stop, to when the controller heard the
   * thaw or the stop.
   */
  frozenMs?: number | null;
  /** A per-phase timeline: when each phase started (ms since the operation started). */
  phases?: { phase: ClusterPhase; atMs: number }[];
}

/** The agent's `run` without `network`: the controller allocates the address. */
const { network: _agentNetwork, ...RUN_SHAPE } = AgentOps.run.shape;

/** Controller operations: their request schemas. */
export const ControllerOps = {
  hosts: obj({ ...pageFields() }),
  /** Each job once, where it lives now; `all`: also ended jobs and the records of past hops. */
  jobs: obj({ host: opt(id()), all: opt(bool()), ...pageFields() }),
  run: obj({
    ...RUN_SHAPE,
    host: opt(id()),
    /** `job` (default): its own address on the job network; `host`: the host's network. */
    net: opt(oneOf(['job', 'host'] as const)),
    /** A specific address from the job subnet instead of the next free one. */
    address: opt(str({ pattern: IPV4_PATTERN, what: 'an IPv4 address of the job subnet' })),
  }),
  /** The address of a named job (`run --name`), as jobs' /etc/hosts have it. */
  resolve: obj({ name: str({ min: 1, max: 128 }) }),
  inspect: obj({ jobId: id() }),
  logs: obj({
    jobId: id(),
    stream: opt(oneOf(['stdout', 'stderr'] as const)),
    tailBytes: opt(int({ min: 1, max: 1024 * 1024 })),
    ...LOG_RANGE,
  }),
  signal: obj({ jobId: id(), signal: signalSchema() }),
  stop: obj({ jobId: id() }),
  'tty-write': AgentOps['tty-write'],
  /** `opId`: the client's id for the operation (it can ask `status` if it loses the reply). */
  migrate: obj({
    jobId: id(),
    to: opt(id()),
    mode: opt(oneOf(MIGRATION_MODES)),
    opId: opt(id()),
  }),
  preflight: obj({ jobId: id(), to: opt(id()) }),
  drain: obj({ host: id(), parallel: opt(int({ min: 1, max: 16 })) }),
  cordon: obj({ host: id() }),
  uncordon: obj({ host: id() }),
  /**
   * Forget a host that left the cluster (`drover hosts rm`): refused while its agent answers, and
   * while it has live jobs unless it was drained since; `force`: its jobs are gone with it.
   */
  'hosts-remove': obj({ host: id(), force: opt(bool()) }),
  ops: obj({ limit: opt(int({ min: 1, max: 1000 })) }),
  status: obj({ opId: id() }),
  adopt: obj({
    host: id(),
    pid: int({ min: 2, max: 4194304 }),
    name: opt(str({ min: 1, max: 128 })),
  }),
  /**
   * History. `newest`: the last `limit` events (oldest of them first) instead of the first after
   * `sinceSeq`; `fold`: a migration's run of `transferring` ticks comes back as one event (the
   * latest tick, with `folded` counting them).
   */
  events: obj({
    sinceSeq: opt(int()),
    limit: opt(int({ min: 1, max: 10000 })),
    host: opt(id()),
    newest: opt(bool()),
    fold: opt(bool()),
  }),
  audit: obj({
    sinceSeq: opt(int()),
    limit: opt(int({ min: 1, max: 10000 })),
    caller: opt(
      str({
        min: 1,
        max: 63,
        pattern: IDENTITY_NAME_PATTERN,
        what: 'an identity name (letters, digits, "_" and "-")',
      }),
    ),
    op: opt(str({ min: 1, max: 63, pattern: /^[a-z][a-z-]{0,62}$/, what: 'an operation name' })),
    /** The last `limit` records (oldest of them first) instead of the first after `sinceSeq`. */
    newest: opt(bool()),
  }),
  checkpoint: obj({
    jobs: opt(arr(id(), { min: 1, max: 256 })),
    all: opt(bool()),
    name: opt(id()),
    leaveRunning: opt(bool()),
  }),
  restore: obj({ name: id(), to: opt(arr(id(), { min: 1, max: 256 })) }),
  'images-list': obj({ ...pageFields() }),
  'images-inspect': obj({ name: id() }),
  'images-delete': obj({ name: id() }),
  /** Remove ended jobs (every host's record of them); live jobs are refused. */
  'jobs-remove': obj({ jobIds: arr(id(), { min: 1, max: 256 }) }),
  /** Remove every ended job. */
  'jobs-prune': obj({}),
  /** What is inside one job's image of a set: processes, files, sockets, memory (`job`: id or name). */
  'images-decode': obj({ name: id(), job: str({ min: 1, max: 128 }) }),
} as const;

export type ControllerOp = keyof typeof ControllerOps;
export type ControllerRequest<Op extends ControllerOp> = Infer<(typeof ControllerOps)[Op]>;

/** Replies of the controller operations. */
export interface ControllerReplies {
  /** Long lists come a page at a time: `next` is what to ask `after` for the next page. */
  /**
   * `unanswered` (in `hosts`, `jobs`, `images-list`): the hosts a list could not hear from, each
   * as `host (why)` ({@link unansweredHost} gives the host). In `hosts`: unreachable hosts (their
   * row is their last heartbeat); in `jobs`: unreachable hosts and reachable ones whose agent
   * did not answer (their jobs are not listed); in `images-list`: unreachable hosts of sets
   * still being made. Absent when every host answered.
   */
  hosts: { hosts: HostStatus[]; next?: string | null; unanswered?: string[] };
  jobs: { jobs: ClusterJob[]; next?: string | null; unanswered?: string[] };
  run: ClusterJob & { placement: string };
  resolve: { name: string; address: string; jobId: string };
  inspect: AgentReplies['inspect'];
  logs: LogChunk;
  signal: ClusterJob;
  stop: ClusterJob;
  'tty-write': { bytes: number };
  migrate: OperationRecord;
  drain: OperationRecord;
  preflight: PreflightReport;
  cordon: HostStatus;
  uncordon: HostStatus;
  /** `jobs`: the live jobs its last heartbeat listed (left behind, with `force`). */
  'hosts-remove': { host: string; lastSeen: string | null; jobs: string[] };
  ops: { ops: OperationRecord[] };
  status: OperationRecord;
  adopt: ClusterJob;
  /** `next`: a page cut short by its size; ask again with `sinceSeq: next` for the rest. */
  events: { events: ClusterEvent[]; next?: number | null };
  audit: {
    entries: { seq: number; time: string; subject: string; entry: AuditEntry }[];
    next?: number | null;
  };
  checkpoint: OperationRecord;
  restore: OperationRecord;
  'images-list': { sets: ImageSet[]; next?: string | null; unanswered?: string[] };
  'images-inspect': ImageSet;
  'images-delete': { deleted: boolean; objects: number };
  'jobs-remove': { removed: RemovedJob[] };
  'jobs-prune': { removed: RemovedJob[] };
  'images-decode': ImageContents & { set: string; jobId: string; name: string; host: string };
}

/** One event of the cluster's history. */
export interface ClusterEvent {
  seq: number;
  subject: string;
  time: string;
  value: unknown;
  /** A folded run of progress ticks: how many, and the first one's sequence and time. */
  folded?: number;
  firstSeq?: number;
  firstTime?: string;
}

/** A job record removed from a host. */
export interface RemovedJob {
  jobId: string;
  name: string;
  host: string;
  state: string;
}

/** True if `op` names a controller operation. */
export function isControllerOp(op: string): op is ControllerOp {
  return Object.hasOwn(ControllerOps, op);
}
