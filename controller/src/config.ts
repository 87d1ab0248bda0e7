/** The controller's configuration: defaults < JSON file < DROVER_* environment < flags. */
import { NatsSettingsInput, type NatsSettings } from '@drover/bus';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { DUMPS_PER_HOST } from './cluster-context.js';
import { DroverError, ErrorCode, type LogLevel } from '@drover/common';
import {
  int,
  intToIpv4,
  ipv4ToInt,
  isHostAddress,
  IPV4_PATTERN,
  obj,
  oneOf,
  opt,
  parseJsonAs,
  parseSubnet,
  str,
  type Infer,
} from '@drover/protocol';

/**
 * The job network the controller hands addresses out of (docs/NETWORK.md): a subnet on the
 * segment every host's job bridge is on, its router, and the range jobs get (default: every
 * host address of the subnet but the gateway).
 */
export interface JobNetworkConfig {
  readonly subnet: string;
  readonly prefixLength: number;
  readonly gateway: string | null;
  /** First and last address handed out (inclusive). */
  readonly first: string;
  readonly last: string;
}

/** Compiled, read-only controller configuration. */
export interface ControllerConfig {
  /** This controller's name (lease holder id). */
  readonly id: string;
  /** Where NATS is and how to authenticate (TLS files, credentials). */
  readonly nats: NatsSettings;
  /** A host with no heartbeat for this long is unreachable. */
  readonly unreachableAfterMs: number;
  /** Leadership lease: the acting controller renews it every third of this. */
  readonly leaseTtlMs: number;
  /** JetStream replicas for cluster state (3 on a 3-node NATS cluster). */
  readonly replicas: 1 | 3;
  /** Complete image sets kept; the oldest beyond this are deleted when a new one completes. */
  readonly imageRetention: number;
  /** A cluster checkpoint's dumps at once on one host; 0: one per CPU of the host. */
  readonly dumpsPerHost: number;
  /** Days the audit stream keeps records (only when it creates the stream). */
  readonly auditRetentionDays: number;
  readonly logLevel: LogLevel;
  /**
   * Where Prometheus metrics are served (`HOST:PORT`, `/metrics`); off when unset. Plain HTTP
   * bound to that address only: a management interface or loopback (docs/OBSERVABILITY.md).
   */
  readonly metricsAddr?: string;
  /** Where jobs' own addresses come from; null: only `--net host` jobs can run. */
  readonly jobNetwork: JobNetworkConfig | null;
}

/** The controller's NATS settings: the bus's, without a token (the controller signs in by TLS, creds or user). */
const { token: _token, ...natsShape } = NatsSettingsInput.shape;

/**
 * The controller's config file (and every raw layer): each field optional and typed, unknown
 * fields refused, in the wire's schema language. Ranges and forms are checked once the layers
 * merge (`compileControllerConfig`).
 */
export const ControllerConfigFile = obj({
  id: opt(str()),
  nats: opt(obj(natsShape)),
  unreachableAfterMs: opt(int()),
  leaseTtlMs: opt(int()),
  replicas: opt(int()),
  imageRetention: opt(int()),
  dumpsPerHost: opt(int()),
  auditRetentionDays: opt(int()),
  logLevel: opt(oneOf(['debug', 'info', 'warn', 'error'] as const satisfies readonly LogLevel[])),
  metricsAddr: opt(str()),
  jobNetwork: opt(obj({ subnet: opt(str()), gateway: opt(str()), range: opt(str()) })),
});

/** Raw, partial config (a file, the environment, flags). */
export type ControllerConfigInput = Infer<typeof ControllerConfigFile>;

function bad(message: string): DroverError {
  return new DroverError(ErrorCode.InvalidArgument, `controller config: ${message}`);
}

/** `DROVER_*` variables as a raw layer. */
export function controllerConfigFromEnv(env: NodeJS.ProcessEnv): ControllerConfigInput {
  const out: ControllerConfigInput = {};
  if (env.DROVER_CONTROLLER_ID) out.id = env.DROVER_CONTROLLER_ID;
  if (env.DROVER_NATS_SERVERS) out.nats = { servers: env.DROVER_NATS_SERVERS };
  if (env.DROVER_NATS_CA || env.DROVER_NATS_CERT || env.DROVER_NATS_KEY) {
    out.nats = {
      ...out.nats,
      tls: {
        ...(env.DROVER_NATS_CA ? { caFile: env.DROVER_NATS_CA } : {}),
        ...(env.DROVER_NATS_CERT ? { certFile: env.DROVER_NATS_CERT } : {}),
        ...(env.DROVER_NATS_KEY ? { keyFile: env.DROVER_NATS_KEY } : {}),
      },
    };
  }
  if (env.DROVER_UNREACHABLE_MS) out.unreachableAfterMs = Number(env.DROVER_UNREACHABLE_MS);
  if (env.DROVER_LEASE_MS) out.leaseTtlMs = Number(env.DROVER_LEASE_MS);
  if (env.DROVER_REPLICAS) out.replicas = Number(env.DROVER_REPLICAS);
  if (env.DROVER_IMAGE_RETENTION) out.imageRetention = Number(env.DROVER_IMAGE_RETENTION);
  if (env.DROVER_DUMPS_PER_HOST) out.dumpsPerHost = Number(env.DROVER_DUMPS_PER_HOST);
  if (env.DROVER_AUDIT_RETENTION_DAYS)
    out.auditRetentionDays = Number(env.DROVER_AUDIT_RETENTION_DAYS);
  if (env.DROVER_LOG_LEVEL) out.logLevel = env.DROVER_LOG_LEVEL as LogLevel;
  if (env.DROVER_METRICS_ADDR) out.metricsAddr = env.DROVER_METRICS_ADDR;
  if (env.DROVER_JOB_SUBNET || env.DROVER_JOB_GATEWAY || env.DROVER_JOB_RANGE) {
    out.jobNetwork = {
      ...(env.DROVER_JOB_SUBNET ? { subnet: env.DROVER_JOB_SUBNET } : {}),
      ...(env.DROVER_JOB_GATEWAY ? { gateway: env.DROVER_JOB_GATEWAY } : {}),
      ...(env.DROVER_JOB_RANGE ? { range: env.DROVER_JOB_RANGE } : {}),
    };
  }
  return out;
}

/**
 * A JSON config file as a raw layer, checked against {@link ControllerConfigFile}: a field that
 * does not fit is refused with an InvalidMessageError (INVALID_ARGUMENT) naming the file and field.
 */
export function controllerConfigFromFile(path: string): ControllerConfigInput {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new DroverError(ErrorCode.InvalidArgument, `cannot read controller config ${path}`, {
      cause: err,
    });
  }
  return parseJsonAs(ControllerConfigFile, text, `controller config ${path}`);
}

/** Merge layers (later wins) and validate. */
export function compileControllerConfig(...layers: ControllerConfigInput[]): ControllerConfig {
  const m: ControllerConfigInput = {};
  let nats: NonNullable<ControllerConfigInput['nats']> = {};
  let jobNet: NonNullable<ControllerConfigInput['jobNetwork']> = {};
  for (const l of layers) {
    Object.assign(m, l);
    if (l.nats) nats = { ...nats, ...l.nats };
    if (l.jobNetwork) jobNet = { ...jobNet, ...l.jobNetwork };
  }
  const servers =
    typeof nats.servers === 'string'
      ? nats.servers.split(',')
      : (nats.servers ?? ['nats://127.0.0.1:4222']);
  if (servers.length === 0 || servers.some((s) => s.trim() === '')) throw bad('no NATS servers');
  const unreachableAfterMs = m.unreachableAfterMs ?? 6000;
  if (!Number.isInteger(unreachableAfterMs) || unreachableAfterMs < 500)
    throw bad('unreachable timeout must be >= 500 ms');
  const leaseTtlMs = m.leaseTtlMs ?? 5000;
  if (!Number.isInteger(leaseTtlMs) || leaseTtlMs < 1000) throw bad('lease TTL must be >= 1000 ms');
  const replicas = m.replicas ?? 1;
  if (replicas !== 1 && replicas !== 3) throw bad('replicas must be 1 or 3');
  const imageRetention = m.imageRetention ?? 10;
  if (!Number.isInteger(imageRetention) || imageRetention < 1)
    throw bad('image retention must be a whole number >= 1');
  const dumpsPerHost = m.dumpsPerHost ?? DUMPS_PER_HOST;
  if (!Number.isInteger(dumpsPerHost) || dumpsPerHost < 0 || dumpsPerHost > 256)
    throw bad('dumps per host must be a whole number, 0 (one per CPU) to 256');
  const auditRetentionDays = m.auditRetentionDays ?? 365;
  if (!Number.isInteger(auditRetentionDays) || auditRetentionDays < 1 || auditRetentionDays > 36500)
    throw bad('audit retention must be a whole number of days, 1 to 36500');
  if (m.metricsAddr !== undefined && !/^(?:\[[^\]]+\]|[^\s:[\]]+):\d{1,5}$/.test(m.metricsAddr))
    throw bad(`metrics address must be HOST:PORT: ${m.metricsAddr}`);
  return Object.freeze({
    id: m.id ?? `controller-${hostname()}-${process.pid}`,
    ...(m.metricsAddr !== undefined ? { metricsAddr: m.metricsAddr } : {}),
    nats: Object.freeze({
      servers: Object.freeze(servers.map((s) => s.trim())),
      ...(nats.tls ? { tls: Object.freeze({ ...nats.tls }) } : {}),
      ...(nats.user !== undefined ? { user: nats.user } : {}),
      ...(nats.pass !== undefined ? { pass: nats.pass } : {}),
      ...(nats.credsFile !== undefined ? { credsFile: nats.credsFile } : {}),
    }),
    unreachableAfterMs,
    leaseTtlMs,
    replicas,
    imageRetention,
    dumpsPerHost,
    auditRetentionDays,
    logLevel: m.logLevel ?? 'info',
    jobNetwork: compileJobNetwork(jobNet),
  });
}

/** Check the job network settings: the gateway and the range inside the subnet, in order. */
export function compileJobNetwork(
  n: NonNullable<ControllerConfigInput['jobNetwork']>,
): JobNetworkConfig | null {
  if (n.subnet === undefined) {
    if (n.gateway !== undefined || n.range !== undefined)
      throw bad('job gateway/range without a job subnet');
    return null;
  }
  const wrap = <T>(f: () => T): T => {
    try {
      return f();
    } catch (err) {
      throw bad((err as Error).message);
    }
  };
  const subnet = wrap(() => parseSubnet(n.subnet!));
  const cidr = `${intToIpv4(subnet.base)}/${subnet.prefixLength}`;
  const gateway = n.gateway ?? null;
  if (gateway !== null && !(IPV4_PATTERN.test(gateway) && isHostAddress(subnet, gateway)))
    throw bad(`job gateway ${gateway} is not a host address of ${cidr}`);
  let first = subnet.base + 1;
  let last = subnet.base + subnet.size - 2;
  if (n.range !== undefined) {
    const [a, b] = n.range.split('-');
    if (!a || !b || !IPV4_PATTERN.test(a) || !IPV4_PATTERN.test(b))
      throw bad(`job range must be FIRST-LAST addresses: ${n.range}`);
    if (!isHostAddress(subnet, a) || !isHostAddress(subnet, b) || ipv4ToInt(a) > ipv4ToInt(b))
      throw bad(`job range ${n.range} is not an ordered range inside ${cidr}`);
    first = ipv4ToInt(a);
    last = ipv4ToInt(b);
  }
  return Object.freeze({
    subnet: cidr,
    prefixLength: subnet.prefixLength,
    gateway,
    first: intToIpv4(first),
    last: intToIpv4(last),
  });
}
