/**
 * The agent's request/reply API: one entry per operation with its request schema; the reply
 * types beside it. Both the agent (server) and its clients import these definitions.
 */
import { pageFields } from './paging.js';
import { ID_PATTERN, ID_WHAT } from './names.js';
import { IPV4_PATTERN, JOB_ADDRESS_SCHEMA, type JobNetwork } from './job-network.js';
import { MigrationOps, type MigrationReplies } from './migration-api.js';
import {
  CHECKPOINT_OPTIONS_SCHEMA,
  type CheckpointOptions,
  type EffectiveCheckpointOptions,
} from './checkpoint-options.js';
import {
  arr,
  bool,
  dict,
  int,
  num,
  obj,
  oneOf,
  opt,
  str,
  type Infer,
  type Schema,
} from './schema.js';
import { signalSchema } from './signals.js';
import { commandSchema } from './command.js';
import type { ImageContents } from './image-contents.js';

/** Job states. `checkpointed`: dumped and stopped; its image can bring it back. */
export const JobState = {
  starting: 'starting',
  running: 'running',
  frozen: 'frozen',
  checkpointing: 'checkpointing',
  migrating: 'migrating',
  /** Moved to another host by a migration; it runs there now. */
  migrated: 'migrated',
  checkpointed: 'checkpointed',
  exited: 'exited',
  lost: 'lost',
} as const;
export type JobState = (typeof JobState)[keyof typeof JobState];

/** How a job came to be: started by Drover in its own namespaces, or an adopted subtree. */
export const JobKind = { namespaced: 'namespaced', adopted: 'adopted' } as const;
export type JobKind = (typeof JobKind)[keyof typeof JobKind];

/**
 * How long a job lives: until its main process ends (`main`, the default: what `docker run`
 * does), or while any process of it is left (`all`: for commands that daemonise).
 */
export const JOB_UNTIL = ['main', 'all'] as const;
export type JobUntil = (typeof JOB_UNTIL)[number];

/**
 * Common signals, for shell completion and help. Any signal `parseSignal` accepts may be sent
 * (names with or without SIG in any case, numbers, real-time signals): see signals.ts.
 */
export const JOB_SIGNALS = [
  'SIGTERM',
  'SIGKILL',
  'SIGINT',
  'SIGHUP',
  'SIGQUIT',
  'SIGUSR1',
  'SIGUSR2',
  'SIGSTOP',
  'SIGCONT',
  'SIGWINCH',
  'SIGALRM',
] as const;

const id = (): Schema<string> => str({ min: 1, max: 63, pattern: ID_PATTERN, what: ID_WHAT });
const path = (): Schema<string> =>
  str({ min: 1, max: 4096, pattern: /^\//, what: 'an absolute path (starting with /)' });

/** An absolute path without `.`, `..` or empty segments (what a job's working directory may be). */
export const NORMAL_PATH_PATTERN = /^\/(?:(?!\.\.?(?:\/|$))[^/]+(?:\/|$))*$/;

/** The most one `tty-write` carries. */
export const TTY_WRITE_MAX = 64 * 1024;

/** Names of environment variables a job may be given. */
export const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A job as the agent reports it. */
export interface JobInfo {
  id: string;
  name: string;
  host: string;
  kind: JobKind;
  state: JobState;
  command: string[];
  cwd: string;
  /** Host PID of the job's root (tini for namespaced jobs). */
  rootPid: number | null;
  /** Host PID of the job's main process (the command itself). */
  mainPid: number | null;
  /** The main process's PID inside the job's PID namespace. */
  mainPidInside: number | null;
  startedAt: string;
  exitedAt: string | null;
  exitCode: number | null;
  signal: string | null;
  memoryLimitBytes: number | null;
  jobDir: string;
  stdoutPath: string;
  stderrPath: string;
  /** The image this incarnation was restored from, if any. */
  restoredFrom: string | null;
  /** Why the job is `lost` or why its last operation failed. */
  note: string | null;
  /** Its own address on the job network (moves with it), or the host's network. */
  network: JobNetwork;
  /** The CRIU options the job asked for (the rest are its host's or Drover's defaults). */
  checkpointOptions: CheckpointOptions;
  /** When the job ends (`main` or `all`). */
  until: JobUntil;
  /**
   * The file (a path inside the job) where its command writes the PID of the process that is
   * its main process once the command exits, as systemd's `PIDFile=`; null: the command itself.
   */
  mainPidfile: string | null;
  /** The command runs on a terminal of the job's own (`run -t`); its output is in stdout. */
  tty: boolean;
}

/** One process of a job, for `inspect`. */
export interface JobProcess {
  pid: number;
  /** PIDs from the agent's namespace inward; the last is the PID the job sees. */
  nspid: number[];
  state: string;
  cmdline: string[];
}

/** A checkpoint image on an agent's disk. */
export interface ImageInfo {
  imageId: string;
  jobId: string;
  host: string;
  dir: string;
  createdAt: string;
  leaveRunning: boolean;
  sizeBytes: number;
  /** Time the job was frozen for this checkpoint (ms). */
  frozenMs: number;
  dumpMs: number;
  /**
   * Only for a job's self-checkpoint (nobody else holds a key for it): the key the image is
   * sealed with. Every other caller of `checkpoint` brings its own key, which is never echoed.
   */
  key?: string;
}

/** One file of an image as stored in the image-set object store. */
export interface ImageFile {
  name: string;
  size: number;
  /** Hex SHA-256 of the file's bytes, computed by the agent that read it. */
  sha256: string;
  /**
   * Where the file's sealed bytes are in its image's pack (`<set>/<job>/` + IMAGE_PACK_OBJECT):
   * set for a small file of a set stored since packs; absent, the file is an object of its own
   * (`<set>/<job>/<name>`: large files, and every file of an older set).
   */
  pack?: { offset: number; length: number };
}

/**
 * The object, under an image's prefix, that holds its small files one after another (no file's
 * name starts with a dot, so none is stored under this one).
 */
export const IMAGE_PACK_OBJECT = '.pack';

/** An image set's key on the wire: base64 of 32 random bytes (AES-256-GCM). */
export const IMAGE_KEY_PATTERN = /^[A-Za-z0-9+/]{43}=$/;

/** Object names of image sets: `<set>/<job>`, each part an id. */
export const IMAGE_PREFIX_PATTERN =
  /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\/[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** What an agent can do and holds: its heartbeat and `info` reply. */
export interface AgentInfo {
  host: string;
  version: string;
  time: string;
  uptimeSec: number;
  kernel: string;
  cpus: number;
  cpuFlags: string[];
  memory: { totalBytes: number; availableBytes: number };
  criu: {
    version: string;
    lazyPages: boolean;
    memTrack: boolean;
    /** What `criu check` says this host's CRIU and kernel can do (absent until probed). */
    abilities?: CriuAbilities;
  };
  /** Where its migration stream listens (peers dial this address; its page server too). */
  stream: { host: string; port: number };
  jobs: { id: string; state: JobState; name: string }[];
  /** The agent's main thread as its heartbeat thread sees it (agents since liveness probes). */
  loop?: LoopHealth;
}

/**
 * How an agent's main thread (its event loop) is doing: `lagMs` the longest delay of its event
 * loop over the last second it reported, `stalledMs` how long it has not reported at all.
 */
export interface LoopHealth {
  lagMs: number;
  stalledMs: number;
}

/**
 * The answer to a liveness probe (`drover.live.<host>`), from the agent's heartbeat thread: the
 * process is alive, since when, and how its main thread is doing.
 */
export interface LivenessReply {
  host: string;
  pid: number;
  uptimeSec: number;
  loop: LoopHealth;
}

/**
 * A host's CRIU abilities: the optional libraries its CRIU was built with (`libbpf`: BPF maps,
 * `gnutls`: TLS, `nftables`: the nftables network lock), the kernel features `criu check
 * --feature` confirms, and the ones it does not (`criu check --all` warns about those).
 */
export interface CriuAbilities {
  build: string[];
  features: string[];
  missing: string[];
}

/** One reason a job cannot be checkpointed or moved. */
export interface PreflightReason {
  code:
    | 'EXTERNAL_TCP'
    | 'EXTERNAL_UNIX_SOCKET'
    | 'DEVICE'
    | 'FILE_MISSING_ON_DESTINATION'
    | 'FILE_SIZE_DIFFERS_ON_DESTINATION'
    | 'CPU_FEATURES_MISSING'
    | 'NO_SPACE_ON_DESTINATION'
    | 'NON_ROOT_UID'
    | 'NOT_RUNNING'
    | 'UNSUPPORTED';
  message: string;
  details: Record<string, unknown>;
}

/** Preflight verdict. */
export interface PreflightReport {
  jobId: string;
  ok: boolean;
  reasons: PreflightReason[];
  /** Files the destination must have (path, and size for non-append files). */
  files: { path: string; size: number | null }[];
  /** Bytes of the job's directory, which travels with it (logs and the job's own files). */
  jobDirBytes: number;
}

/**
 * Which part of a job's log to read, besides `tailBytes` (the last N bytes, the default 64 KiB):
 * `fromByte` reads on from an offset (following a log: pass the last reply's `nextByte`);
 * `sinceMs` starts at what was written since that time (epoch ms; the agent samples log sizes
 * each second, so up to a second more may come back); `tailLines` keeps the last N lines.
 */
export const LOG_RANGE = {
  fromByte: opt(int()),
  sinceMs: opt(int()),
  tailLines: opt(int({ min: 0, max: 100_000 })),
} as const;

/** A piece of a job's log. */
export interface LogChunk {
  data: string;
  /** More was there than came back (an older part, or the rest after `fromByte`). */
  truncated: boolean;
  /** The log's size now. */
  sizeBytes: number;
  /** Where `data` starts and where the next read should start (bytes; whole UTF-8 characters). */
  fromByte?: number;
  nextByte?: number;
  /** The job's state on the host that answered (a follower stops once it has ended). */
  state?: JobState;
}

/** The files of an image in the image-set store, with their sizes and checksums. */
const IMAGE_FILES = arr(
  obj({
    name: str({ min: 1, max: 255, pattern: /^[A-Za-z0-9][A-Za-z0-9_.-]*$/ }),
    size: int({ min: 0 }),
    sha256: str({ pattern: /^[0-9a-f]{64}$/ }),
    pack: opt(obj({ offset: int({ min: 0 }), length: int({ min: 1 }) })),
  }),
  { min: 1, max: 100000 },
);

/** An image into the image-set store: which, under what prefix, with the set's key. */
const IMAGE_PUSH = obj({
  imageId: id(),
  prefix: str({ pattern: IMAGE_PREFIX_PATTERN }),
  key: str({ pattern: IMAGE_KEY_PATTERN }),
});

/** Every agent operation: its request schema. Replies are typed in `AgentReplies`. */
export const AgentOps = {
  info: obj({}),
  run: obj({
    command: commandSchema(),
    env: opt(
      dict(str({ max: 8192 }), {
        maxKeys: 256,
        key: str({
          min: 1,
          max: 256,
          pattern: ENV_NAME_PATTERN,
          what: 'a variable name (letters, digits and _, not starting with a digit)',
        }),
      }),
    ),
    cwd: opt(
      str({
        min: 1,
        max: 4096,
        pattern: NORMAL_PATH_PATTERN,
        what: 'an absolute path (starting with /) without "." or ".." parts',
      }),
    ),
    name: opt(str({ min: 1, max: 128 })),
    hostname: opt(
      str({
        min: 1,
        max: 63,
        pattern: /^[A-Za-z0-9][A-Za-z0-9-]*$/,
        what: 'a hostname: letters, digits and "-", starting with a letter or digit',
      }),
    ),
    memoryLimitBytes: opt(int({ min: 4 * 1024 * 1024 })),
    jobId: opt(id()),
    /** Its own address on the job segment (allocated by the controller); absent: the host's network. */
    network: opt(JOB_ADDRESS_SCHEMA),
    /** CRIU options from the fixed list of `checkpoint-options.ts`; they travel with the job. */
    checkpointOptions: opt(CHECKPOINT_OPTIONS_SCHEMA),
    until: opt(oneOf(JOB_UNTIL)),
    mainPidfile: opt(str({ min: 2, max: 4096, pattern: NORMAL_PATH_PATTERN })),
    tty: opt(bool()),
  }),
  adopt: obj({ pid: int({ min: 2, max: 4194304 }), name: opt(str({ min: 1, max: 128 })) }),
  /** Jobs by id, a page at a time (paging.ts). */
  list: obj({ ...pageFields() }),
  inspect: obj({ jobId: id() }),
  signal: obj({ jobId: id(), signal: signalSchema() }),
  logs: obj({
    jobId: id(),
    stream: opt(oneOf(['stdout', 'stderr'] as const)),
    tailBytes: opt(int({ min: 1, max: 1024 * 1024 })),
    ...LOG_RANGE,
  }),
  /** Input for a job run with a terminal (`run -t`): bytes for its terminal, as typed. */
  'tty-write': obj({ jobId: id(), data: str({ min: 1, max: TTY_WRITE_MAX }) }),
  freeze: obj({ jobId: id() }),
  /**
   * A cluster checkpoint's barrier on one host: every job of the cut here frozen together (each
   * freeze requested back to back, then waited for together); all or nothing. With `atMs` (epoch
   * ms, this host's clock as `clock` reads it) the freezes are made at that instant (a scheduled
   * cut); CUT_MISSED, nothing frozen, if it is more than `lateMs` (default 2) past when armed.
   */
  'freeze-many': obj({
    jobIds: arr(id(), { min: 1, max: 4096 }),
    atMs: opt(num({ min: 0 })),
    lateMs: opt(num({ min: 0, max: 1000 })),
  }),
  /**
   * This host's clock: a cluster checkpoint asks a few times to estimate its offset before it
   * schedules a cut (an agent that does not know `clock` gets an unscheduled one).
   */
  clock: obj({}),
  /**
   * Before a cluster checkpoint's cut: start `count` CRIU processes for its dumps on this host, so
   * that each dump in the cut is one request to a process already running. Those left unused go
   * at `thaw-many`, on a failed `freeze-many`, or after a minute.
   */
  'criu-warm': obj({ count: int({ min: 0, max: 64 }) }),
  /**
   * Before a cluster checkpoint's cut: ready each dump of `dumps` on this host (the job's record
   * read, the image's directory made, the dump plan drawn) while the job still runs; its dump in
   * the cut (`checkpoint-many`) starts from that. Those not taken go at `thaw-many`, on a failed
   * `freeze-many`, or after a minute.
   */
  'dumps-prepare': obj({ dumps: arr(obj({ jobId: id(), imageId: id() }), { min: 1, max: 4096 }) }),
  thaw: obj({ jobId: id() }),
  /**
   * The end of a cluster checkpoint's cut on one host: every job of `jobIds` thawed together
   * (their networks unlocked, then every cgroup thawed at once); the first error after all tried.
   */
  'thaw-many': obj({ jobIds: arr(id(), { min: 1, max: 4096 }) }),
  /** Dump a job into a local image sealed with `key` (the caller keeps it: the host never does). */
  checkpoint: obj({
    jobId: id(),
    leaveRunning: opt(bool()),
    imageId: opt(id()),
    key: str({ pattern: IMAGE_KEY_PATTERN }),
  }),
  /**
   * A cluster checkpoint's dumps on this host, after its cut: each job of `dumps` (frozen by the
   * cut) into its image, as `checkpoint` would, `parallel` at once (default: one per CPU). No new
   * dump starts after a failure, nor after `checkpoint-stop` of `runId` (the checkpoint's
   * operation); the request fails with the first failure once those running end. An image of
   * `dumps` made already (by an earlier request for the same cut) counts as made.
   */
  'checkpoint-many': obj({
    runId: id(),
    dumps: arr(obj({ jobId: id(), imageId: id() }), { min: 1, max: 4096 }),
    leaveRunning: opt(bool()),
    key: str({ pattern: IMAGE_KEY_PATTERN }),
    parallel: opt(int({ min: 1, max: 64 })),
  }),
  /** No new dump of the `checkpoint-many` requests of `runId` starts here (a host failed one). */
  'checkpoint-stop': obj({ runId: id() }),
  /** Restore a local image; `key` is the one it was sealed with. */
  restore: obj({
    imageId: id(),
    leaveFrozen: opt(bool()),
    key: str({ pattern: IMAGE_KEY_PATTERN }),
  }),
  preflight: obj({ jobId: id(), destination: opt(id()) }),
  'files-check': obj({
    files: arr(obj({ path: path(), size: opt(int()) }), { max: 4096 }),
    /** Also say how many bytes are free where jobs' directories live. */
    space: opt(bool()),
  }),
  'images-list': obj({}),
  'images-delete': obj({ imageId: id() }),
  /** Seal a local image with the set's `key` into the image-set store under `prefix` (idempotent). */
  'image-push': IMAGE_PUSH,
  /**
   * `image-push`, then the local image goes (idempotent): an image still waiting for its seal (a
   * cluster checkpoint's) is sealed straight from its dump into the store, never onto the disk.
   */
  'image-move': IMAGE_PUSH,
  /** Bring an image back from the image-set store, authenticating and checking every byte. */
  'image-fetch': obj({
    imageId: id(),
    prefix: str({ pattern: IMAGE_PREFIX_PATTERN }),
    key: str({ pattern: IMAGE_KEY_PATTERN }),
    files: IMAGE_FILES,
  }),
  /**
   * Decode an image of the image-set store (what `crit` shows: processes, files, sockets,
   * memory): read with the set's `key`, every file checked against its checksum, in memory.
   */
  'image-decode': obj({
    prefix: str({ pattern: IMAGE_PREFIX_PATTERN, what: 'SET/JOB' }),
    key: str({ pattern: IMAGE_KEY_PATTERN, what: 'an image key (base64 of 32 bytes)' }),
    files: IMAGE_FILES,
  }),
  /**
   * Stop a frozen job for good: with `imageId` it lives on in that image (state `checkpointed`),
   * without it the job is ended (`exited`, a rolled-back restore). Idempotent.
   */
  discard: obj({ jobId: id(), imageId: opt(id()), note: opt(str({ max: 512 })) }),
  remove: obj({ jobId: id() }),
  /**
   * From the controller: every named job's address, for the jobs' own /etc/hosts (the agent
   * rewrites each of its jobs' files). The whole table each time; the latest wins.
   */
  'names-set': obj({
    names: arr(
      obj({
        name: str({ min: 1, max: 128 }),
        address: str({ pattern: IPV4_PATTERN }),
      }),
      { max: 100_000 },
    ),
  }),
  ...MigrationOps,
} as const;

/** The operation names. */
export type AgentOp = keyof typeof AgentOps;
/** The request type of an operation. */
export type AgentRequest<Op extends AgentOp> = Infer<(typeof AgentOps)[Op]>;

/** The reply type of each operation. */
export interface AgentReplies extends MigrationReplies {
  info: AgentInfo;
  run: JobInfo;
  adopt: JobInfo;
  /** `next`: the id to ask `after` for the next page (null or absent: the last). */
  list: { jobs: JobInfo[]; next?: string | null };
  inspect: JobInfo & {
    processes: JobProcess[];
    memoryUsageBytes: number | null;
    /** What the next checkpoint would use (the job's choices over its host's and Drover's defaults). */
    effectiveCheckpointOptions: EffectiveCheckpointOptions | null;
  };
  signal: JobInfo;
  logs: LogChunk;
  'tty-write': { bytes: number };
  /** `frozenAtMs`: this host's clock (epoch ms) when every task of the job was frozen. */
  freeze: JobInfo & { frozenAtMs: number };
  /**
   * Each job as frozen, in the order asked, with when the kernel reported it frozen; for a
   * scheduled cut, when the freezes were requested (`issuedAtMs`, at or just after `atMs`) and
   * when each job's request returned (`requestedAtMs`: from then on it runs no user code).
   */
  'freeze-many': {
    jobs: (JobInfo & { frozenAtMs: number; requestedAtMs?: number })[];
    issuedAtMs?: number;
  };
  /** Epoch ms, sub-millisecond (`performance.timeOrigin + performance.now()`), when it answered. */
  clock: { nowMs: number };
  /** How many were started now, and how many wait in all. */
  'criu-warm': { started: number; waiting: number };
  /** How many dumps were readied. */
  'dumps-prepare': { prepared: number };
  thaw: JobInfo;
  /**
   * Each job as thawed, in the order asked; `thawedAtMs`: this host's clock (epoch ms,
   * sub-millisecond) when the last of their cgroups was thawed, from when every one of them runs
   * (absent from agents before it).
   */
  'thaw-many': { jobs: JobInfo[]; thawedAtMs?: number };
  checkpoint: ImageInfo;
  /**
   * Each dump's image, in the order asked; when it started and how long its call took (ms from
   * the request's start, this host's clock).
   */
  'checkpoint-many': { dumps: { image: ImageInfo; startedMs: number; tookMs: number }[] };
  /** Whether a request of that run was under way here. */
  'checkpoint-stop': { stopped: boolean };
  restore: JobInfo;
  preflight: PreflightReport;
  'files-check': {
    missing: string[];
    sizeDiffers: { path: string; expected: number; actual: number }[];
    /** With `space`: bytes free in the agent's state directory. */
    freeBytes?: number;
  };
  'images-list': { images: ImageInfo[] };
  'images-delete': { deleted: boolean };
  'image-push': { files: ImageFile[]; sizeBytes: number; durationMs: number };
  'image-move': { files: ImageFile[]; sizeBytes: number; durationMs: number };
  'image-fetch': ImageInfo & { durationMs: number };
  'image-decode': ImageContents;
  discard: JobInfo;
  remove: { removed: boolean };
  'names-set': { jobs: number };
}

/** True if `op` names an agent operation. */
export function isAgentOp(op: string): op is AgentOp {
  return Object.hasOwn(AgentOps, op);
}
