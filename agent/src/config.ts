/** The agent's configuration: defaults < JSON file < DROVER_* environment < flags, compiled once. */
import { NatsSettingsInput, type NatsSettings } from '@drover/bus';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { DroverError, ErrorCode, type LogLevel } from '@drover/common';
import {
  arr,
  DEFAULT_JOB_BRIDGE,
  ID_PATTERN,
  IFNAME_PATTERN,
  int,
  obj,
  oneOf,
  opt,
  parseCheckpointOptions,
  parseJsonAs,
  str,
  type CheckpointOptions,
  type Infer,
} from '@drover/protocol';

/** The compiled, read-only configuration. */
export interface AgentConfig {
  readonly hostId: string;
  /** Jobs, images and agent state live here; use the same path on every host (jobs keep paths). */
  readonly stateDir: string;
  /** Where NATS is and how to authenticate (TLS files, credentials). */
  readonly nats: NatsSettings;
  readonly heartbeatIntervalMs: number;
  /** Address the migration stream listens on (`host:port`). */
  readonly streamListen: string;
  /** criu binary; found automatically (>= 4.2) when unset. */
  readonly criuPath?: string;
  /** Parent cgroup name for job cgroups. */
  readonly cgroupParent: string;
  readonly logLevel: LogLevel;
  /** Memory kept free for the host: incoming migrations needing more are refused. */
  readonly reserveMemoryBytes: number;
  /** Most live jobs this host takes; incoming migrations beyond it are refused. */
  readonly maxJobs: number;
  /**
   * SCHED_FIFO priority of the cut timer's thread while a scheduled cut is pending (1–99;
   * 0: it keeps the normal policy). docs/CHECKPOINT.md, "The cut timer's priority".
   */
  readonly cutPriority: number;
  /**
   * How long an incoming migration's CRIU restore may run before it is killed and the move rolled
   * back (the source thaws its frozen original): the bound on a restore that cannot finish, such
   * as one waiting for a file lock the frozen original holds on storage both hosts share.
   */
  readonly restoreTimeoutMs: number;
  /** Fault injection for test suites (`DROVER_FAULT`), never set from a message. */
  readonly fault?: string;
  /**
   * Where Prometheus metrics are served (`HOST:PORT`, `/metrics`); off when unset. Plain HTTP
   * bound to that address only: a management interface or loopback (docs/OBSERVABILITY.md).
   */
  readonly metricsAddr?: string;
  /** The bridge on the job segment that jobs with their own address hang off (docs/NETWORK.md). */
  readonly jobBridge: string;
  /**
   * This host's default CRIU options for every job (under each job's own `run --checkpoint-opt`,
   * over Drover's defaults): `checkpoint-options.ts` in @drover/protocol lists them.
   */
  readonly checkpointOptions: Readonly<CheckpointOptions>;
  /** Certificates for agent-to-agent streams: when set, streams use mutual TLS. */
  readonly streamTls?: {
    readonly caFile: string;
    readonly certFile: string;
    readonly keyFile: string;
    /**
     * The CA's revocation list (PEM), re-read when it changes (crl-watch.ts): peers whose
     * certificate it lists are refused on streams and on CRIU's page channel.
     */
    readonly crlFile?: string;
  };
}

const LEVELS = ['debug', 'info', 'warn', 'error'] as const satisfies readonly LogLevel[];

/**
 * The agent's config file (and every raw layer): each field optional and typed, unknown fields
 * refused, in the wire's schema language. Ranges and forms are checked once the layers merge
 * (`compileAgentConfig`).
 */
export const AgentConfigFile = obj({
  hostId: opt(str()),
  stateDir: opt(str()),
  nats: opt(NatsSettingsInput),
  heartbeatIntervalMs: opt(int()),
  streamListen: opt(str()),
  criuPath: opt(str()),
  cgroupParent: opt(str()),
  logLevel: opt(oneOf(LEVELS)),
  reserveMemoryBytes: opt(int()),
  maxJobs: opt(int()),
  cutPriority: opt(int()),
  restoreTimeoutMs: opt(int()),
  fault: opt(str()),
  metricsAddr: opt(str()),
  jobBridge: opt(str()),
  /** `NAME[=VALUE]` checkpoint options, as `drover run --checkpoint-opt` takes them. */
  checkpointOptions: opt(arr(str())),
  streamTls: opt(obj({ caFile: str(), certFile: str(), keyFile: str(), crlFile: opt(str()) })),
});

/** Raw, partial config as it appears in a file. */
export type AgentConfigInput = Infer<typeof AgentConfigFile>;

const DEFAULTS = {
  stateDir: '/var/lib/drover',
  servers: ['nats://127.0.0.1:4222'],
  heartbeatIntervalMs: 2000,
  streamListen: '0.0.0.0:7070',
  cgroupParent: 'drover',
  logLevel: 'info' as LogLevel,
  reserveMemoryBytes: 256 * 1024 * 1024,
  maxJobs: 1000,
  cutPriority: 10,
  restoreTimeoutMs: 60_000,
  jobBridge: DEFAULT_JOB_BRIDGE,
};

function bad(message: string): DroverError {
  return new DroverError(ErrorCode.InvalidArgument, `agent config: ${message}`);
}

/** Read `DROVER_*` variables into the raw shape. */
export function configFromEnv(env: NodeJS.ProcessEnv): AgentConfigInput {
  const out: AgentConfigInput = {};
  const nats: NonNullable<AgentConfigInput['nats']> = {};
  if (env.DROVER_HOST_ID) out.hostId = env.DROVER_HOST_ID;
  if (env.DROVER_STATE_DIR) out.stateDir = env.DROVER_STATE_DIR;
  if (env.DROVER_NATS_SERVERS) nats.servers = env.DROVER_NATS_SERVERS;
  if (env.DROVER_NATS_USER) nats.user = env.DROVER_NATS_USER;
  if (env.DROVER_NATS_PASS) nats.pass = env.DROVER_NATS_PASS;
  if (env.DROVER_NATS_TOKEN) nats.token = env.DROVER_NATS_TOKEN;
  if (env.DROVER_NATS_CREDS) nats.credsFile = env.DROVER_NATS_CREDS;
  if (env.DROVER_NATS_CA || env.DROVER_NATS_CERT || env.DROVER_NATS_KEY) {
    nats.tls = {
      ...(env.DROVER_NATS_CA ? { caFile: env.DROVER_NATS_CA } : {}),
      ...(env.DROVER_NATS_CERT ? { certFile: env.DROVER_NATS_CERT } : {}),
      ...(env.DROVER_NATS_KEY ? { keyFile: env.DROVER_NATS_KEY } : {}),
    };
  }
  if (Object.keys(nats).length) out.nats = nats;
  if (env.DROVER_HEARTBEAT_MS) out.heartbeatIntervalMs = Number(env.DROVER_HEARTBEAT_MS);
  if (env.DROVER_STREAM_LISTEN) out.streamListen = env.DROVER_STREAM_LISTEN;
  if (env.DROVER_CRIU) out.criuPath = env.DROVER_CRIU;
  if (env.DROVER_CGROUP_PARENT) out.cgroupParent = env.DROVER_CGROUP_PARENT;
  if (env.DROVER_LOG_LEVEL) out.logLevel = env.DROVER_LOG_LEVEL as LogLevel;
  if (env.DROVER_RESERVE_MEMORY) out.reserveMemoryBytes = Number(env.DROVER_RESERVE_MEMORY);
  if (env.DROVER_MAX_JOBS) out.maxJobs = Number(env.DROVER_MAX_JOBS);
  if (env.DROVER_CUT_PRIORITY) out.cutPriority = Number(env.DROVER_CUT_PRIORITY);
  if (env.DROVER_RESTORE_TIMEOUT_MS) out.restoreTimeoutMs = Number(env.DROVER_RESTORE_TIMEOUT_MS);
  if (env.DROVER_FAULT) out.fault = env.DROVER_FAULT;
  if (env.DROVER_METRICS_ADDR) out.metricsAddr = env.DROVER_METRICS_ADDR;
  if (env.DROVER_JOB_BRIDGE) out.jobBridge = env.DROVER_JOB_BRIDGE;
  if (env.DROVER_CHECKPOINT_OPTS) out.checkpointOptions = env.DROVER_CHECKPOINT_OPTS.split(',');
  if (env.DROVER_STREAM_CA && env.DROVER_STREAM_CERT && env.DROVER_STREAM_KEY) {
    out.streamTls = {
      caFile: env.DROVER_STREAM_CA,
      certFile: env.DROVER_STREAM_CERT,
      keyFile: env.DROVER_STREAM_KEY,
      ...(env.DROVER_STREAM_CRL ? { crlFile: env.DROVER_STREAM_CRL } : {}),
    };
  }
  return out;
}

/** Parse `drover-agent` flags; returns the config file path (if any) and the raw overrides. */
export function configFromArgs(argv: readonly string[]): {
  file?: string;
  input: AgentConfigInput;
  help?: true;
} {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      config: { type: 'string', short: 'c' },
      'host-id': { type: 'string' },
      'state-dir': { type: 'string' },
      nats: { type: 'string' },
      'nats-ca': { type: 'string' },
      'nats-cert': { type: 'string' },
      'nats-key': { type: 'string' },
      'nats-creds': { type: 'string' },
      'nats-user': { type: 'string' },
      'nats-pass': { type: 'string' },
      'stream-listen': { type: 'string' },
      'heartbeat-ms': { type: 'string' },
      criu: { type: 'string' },
      'cgroup-parent': { type: 'string' },
      'log-level': { type: 'string' },
      'reserve-memory': { type: 'string' },
      'max-jobs': { type: 'string' },
      'cut-priority': { type: 'string' },
      'restore-timeout-ms': { type: 'string' },
      'stream-ca': { type: 'string' },
      'stream-cert': { type: 'string' },
      'stream-key': { type: 'string' },
      'stream-crl': { type: 'string' },
      'metrics-addr': { type: 'string' },
      'job-bridge': { type: 'string' },
      'checkpoint-opt': { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) return { input: {}, help: true };
  const input = configFromEnv({
    ...(values['host-id'] ? { DROVER_HOST_ID: values['host-id'] } : {}),
    ...(values['state-dir'] ? { DROVER_STATE_DIR: values['state-dir'] } : {}),
    ...(values.nats ? { DROVER_NATS_SERVERS: values.nats } : {}),
    ...(values['nats-ca'] ? { DROVER_NATS_CA: values['nats-ca'] } : {}),
    ...(values['nats-cert'] ? { DROVER_NATS_CERT: values['nats-cert'] } : {}),
    ...(values['nats-key'] ? { DROVER_NATS_KEY: values['nats-key'] } : {}),
    ...(values['nats-creds'] ? { DROVER_NATS_CREDS: values['nats-creds'] } : {}),
    ...(values['nats-user'] ? { DROVER_NATS_USER: values['nats-user'] } : {}),
    ...(values['nats-pass'] ? { DROVER_NATS_PASS: values['nats-pass'] } : {}),
    ...(values['stream-listen'] ? { DROVER_STREAM_LISTEN: values['stream-listen'] } : {}),
    ...(values['heartbeat-ms'] ? { DROVER_HEARTBEAT_MS: values['heartbeat-ms'] } : {}),
    ...(values.criu ? { DROVER_CRIU: values.criu } : {}),
    ...(values['cgroup-parent'] ? { DROVER_CGROUP_PARENT: values['cgroup-parent'] } : {}),
    ...(values['log-level'] ? { DROVER_LOG_LEVEL: values['log-level'] } : {}),
    ...(values['reserve-memory'] ? { DROVER_RESERVE_MEMORY: values['reserve-memory'] } : {}),
    ...(values['max-jobs'] ? { DROVER_MAX_JOBS: values['max-jobs'] } : {}),
    ...(values['cut-priority'] ? { DROVER_CUT_PRIORITY: values['cut-priority'] } : {}),
    ...(values['restore-timeout-ms']
      ? { DROVER_RESTORE_TIMEOUT_MS: values['restore-timeout-ms'] }
      : {}),
    ...(values['stream-ca'] ? { DROVER_STREAM_CA: values['stream-ca'] } : {}),
    ...(values['stream-cert'] ? { DROVER_STREAM_CERT: values['stream-cert'] } : {}),
    ...(values['stream-key'] ? { DROVER_STREAM_KEY: values['stream-key'] } : {}),
    ...(values['stream-crl'] ? { DROVER_STREAM_CRL: values['stream-crl'] } : {}),
    ...(values['metrics-addr'] ? { DROVER_METRICS_ADDR: values['metrics-addr'] } : {}),
    ...(values['job-bridge'] ? { DROVER_JOB_BRIDGE: values['job-bridge'] } : {}),
    ...(values['checkpoint-opt']?.length
      ? { DROVER_CHECKPOINT_OPTS: values['checkpoint-opt'].join(',') }
      : {}),
  });
  return { ...(values.config ? { file: values.config } : {}), input };
}

/**
 * Read a JSON config file, checked against {@link AgentConfigFile}: a field that does not fit is
 * refused with an InvalidMessageError (INVALID_ARGUMENT) naming the file and the field.
 */
export function configFromFile(path: string): AgentConfigInput {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new DroverError(ErrorCode.InvalidArgument, `cannot read agent config ${path}`, {
      cause: err,
    });
  }
  return parseJsonAs(AgentConfigFile, text, `agent config ${path}`);
}

/** Merge layers (later wins) and validate into a read-only AgentConfig. */
export function compileAgentConfig(...layers: AgentConfigInput[]): AgentConfig {
  const m: AgentConfigInput = {};
  let nats: NonNullable<AgentConfigInput['nats']> = {};
  for (const l of layers) {
    Object.assign(m, l);
    if (l.nats) nats = { ...nats, ...l.nats };
  }
  const hostId = m.hostId ?? hostname();
  if (!ID_PATTERN.test(hostId))
    throw bad(`host id ${JSON.stringify(hostId)} has unsafe characters`);
  const servers =
    typeof nats.servers === 'string' ? nats.servers.split(',') : (nats.servers ?? DEFAULTS.servers);
  if (servers.length === 0 || servers.some((s) => s.trim() === '')) throw bad('no NATS servers');
  const stateDir = m.stateDir ?? DEFAULTS.stateDir;
  if (!stateDir.startsWith('/')) throw bad(`state dir must be absolute: ${stateDir}`);
  const heartbeatIntervalMs = m.heartbeatIntervalMs ?? DEFAULTS.heartbeatIntervalMs;
  if (!Number.isInteger(heartbeatIntervalMs) || heartbeatIntervalMs < 100) {
    throw bad(`heartbeat interval must be an integer >= 100 ms: ${heartbeatIntervalMs}`);
  }
  const logLevel = m.logLevel ?? DEFAULTS.logLevel;
  if (!(LEVELS as readonly string[]).includes(logLevel)) throw bad(`unknown log level ${logLevel}`);
  const streamListen = m.streamListen ?? DEFAULTS.streamListen;
  if (!/^[^\s]+:\d+$/.test(streamListen))
    throw bad(`stream listen must be host:port: ${streamListen}`);
  const cgroupParent = m.cgroupParent ?? DEFAULTS.cgroupParent;
  if (!ID_PATTERN.test(cgroupParent))
    throw bad(`cgroup parent has unsafe characters: ${cgroupParent}`);
  const reserveMemoryBytes = m.reserveMemoryBytes ?? DEFAULTS.reserveMemoryBytes;
  if (!Number.isSafeInteger(reserveMemoryBytes) || reserveMemoryBytes < 0) {
    throw bad(`reserve memory must be a byte count: ${reserveMemoryBytes}`);
  }
  const maxJobs = m.maxJobs ?? DEFAULTS.maxJobs;
  if (!Number.isInteger(maxJobs) || maxJobs < 0) throw bad(`max jobs must be a count: ${maxJobs}`);
  const cutPriority = m.cutPriority ?? DEFAULTS.cutPriority;
  if (!Number.isInteger(cutPriority) || cutPriority < 0 || cutPriority > 99) {
    throw bad(`cut priority must be 0 (off) or a real-time priority 1-99: ${cutPriority}`);
  }
  const restoreTimeoutMs = m.restoreTimeoutMs ?? DEFAULTS.restoreTimeoutMs;
  if (!Number.isInteger(restoreTimeoutMs) || restoreTimeoutMs < 1000) {
    throw bad(`restore timeout must be an integer >= 1000 ms: ${restoreTimeoutMs}`);
  }
  if (m.metricsAddr !== undefined && !/^(?:\[[^\]]+\]|[^\s:[\]]+):\d{1,5}$/.test(m.metricsAddr))
    throw bad(`metrics address must be HOST:PORT: ${m.metricsAddr}`);
  const jobBridge = m.jobBridge ?? DEFAULTS.jobBridge;
  if (!IFNAME_PATTERN.test(jobBridge))
    throw bad(`job bridge is not an interface name: ${jobBridge}`);
  let checkpointOptions: CheckpointOptions;
  try {
    checkpointOptions = parseCheckpointOptions(m.checkpointOptions ?? []);
  } catch (err) {
    throw new DroverError(ErrorCode.InvalidArgument, `agent config: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return Object.freeze({
    jobBridge,
    checkpointOptions: Object.freeze(checkpointOptions),
    hostId,
    reserveMemoryBytes,
    maxJobs,
    cutPriority,
    restoreTimeoutMs,
    ...(m.fault !== undefined ? { fault: m.fault } : {}),
    ...(m.metricsAddr !== undefined ? { metricsAddr: m.metricsAddr } : {}),
    ...(m.streamTls !== undefined ? { streamTls: Object.freeze({ ...m.streamTls }) } : {}),
    stateDir,
    nats: Object.freeze({
      servers: Object.freeze(servers.map((s) => s.trim())),
      ...(nats.tls ? { tls: Object.freeze({ ...nats.tls }) } : {}),
      ...(nats.user !== undefined ? { user: nats.user } : {}),
      ...(nats.pass !== undefined ? { pass: nats.pass } : {}),
      ...(nats.token !== undefined ? { token: nats.token } : {}),
      ...(nats.credsFile !== undefined ? { credsFile: nats.credsFile } : {}),
    }),
    heartbeatIntervalMs,
    streamListen,
    ...(m.criuPath !== undefined ? { criuPath: m.criuPath } : {}),
    cgroupParent,
    logLevel,
  });
}
