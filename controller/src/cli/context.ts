/** What every command shares: global options, the connection to the controller, printing. */
import { Bus, callAllPages, ControllerClient } from '@drover/bus';
import { ErrorCode, isDroverError } from '@drover/common';
import {
  ControllerOps,
  type ControllerOp,
  type ControllerReplies,
  type ControllerRequest,
} from '@drover/protocol';
import { DEFAULT_LOCAL_DIR, localNatsUrl, localTls } from '@drover/local-cluster/local-state';
import { UsageError } from '@drover/cli-kit';

/** The local cluster's directory (`drover up`): `DROVER_LOCAL_DIR`, else the default. */
export function defaultLocalDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.DROVER_LOCAL_DIR || DEFAULT_LOCAL_DIR;
}

/**
 * Where NATS is when `--nats` is not given: `DROVER_NATS_SERVERS`, else the URL of the local
 * cluster `drover up` left running (from its state file), else the usual local port.
 */
export function defaultNats(env: NodeJS.ProcessEnv = process.env): string {
  return env.DROVER_NATS_SERVERS || localNatsUrl(defaultLocalDir(env)) || 'nats://127.0.0.1:4222';
}

/**
 * The client certificate when no `--nats-*` flag is given: `DROVER_NATS_CA/CERT/KEY`, else the
 * operator certificate of the local cluster `drover up` left running (when it uses TLS) — unless
 * `--nats` (`natsFlag`) or `DROVER_NATS_SERVERS` names another cluster than that one.
 */
export function defaultTls(
  env: NodeJS.ProcessEnv = process.env,
  natsFlag?: string,
): {
  ca?: string;
  cert?: string;
  key?: string;
} {
  if (env.DROVER_NATS_CA || env.DROVER_NATS_CERT || env.DROVER_NATS_KEY) {
    return {
      ...(env.DROVER_NATS_CA ? { ca: env.DROVER_NATS_CA } : {}),
      ...(env.DROVER_NATS_CERT ? { cert: env.DROVER_NATS_CERT } : {}),
      ...(env.DROVER_NATS_KEY ? { key: env.DROVER_NATS_KEY } : {}),
    };
  }
  // Only the local cluster's own URL gets its certificate.
  if (env.DROVER_NATS_SERVERS) return {};
  const dir = defaultLocalDir(env);
  if (natsFlag !== undefined && natsFlag !== localNatsUrl(dir)) return {};
  const local = localTls(dir);
  return local ? { ca: local.caFile, cert: local.certFile, key: local.keyFile } : {};
}

/** Global options of every command. */
export interface GlobalArgs {
  nats: string;
  json: boolean;
  timeout: number;
  /** TLS: the cluster CA, this client's certificate and key (`--nats-ca/--nats-cert/--nats-key`). */
  natsCa?: string | undefined;
  natsCert?: string | undefined;
  natsKey?: string | undefined;
}

/** The TLS files of the global options, if any. */
export function tlsOf(
  argv: GlobalArgs,
): { caFile?: string; certFile?: string; keyFile?: string } | undefined {
  if (!argv.natsCa && !argv.natsCert && !argv.natsKey) return undefined;
  return {
    ...(argv.natsCa ? { caFile: argv.natsCa } : {}),
    ...(argv.natsCert ? { certFile: argv.natsCert } : {}),
    ...(argv.natsKey ? { keyFile: argv.natsKey } : {}),
  };
}

/** Something that follows events while a call runs (e.g. progress); returns how to stop it. */
export type Watcher = (bus: Bus) => () => void;

/** Ask the controller one thing on an open connection (nothing printed; a list: every page). */
export type Ask = <Op extends ControllerOp>(
  op: Op,
  req: ControllerRequest<Op>,
) => Promise<ControllerReplies[Op]>;

/** Flags of a command by the request field they fill, to name them in validation errors. */
export type FlagNames = Readonly<Record<string, string>>;

/**
 * Check a request with its wire schema before connecting: a bad flag is a usage error (exit 2,
 * nothing changed) that names the flag, not the request field.
 */
export function validateRequest<Op extends ControllerOp>(
  op: Op,
  req: ControllerRequest<Op>,
  flags: FlagNames = {},
): ControllerRequest<Op> {
  try {
    return ControllerOps[op].parse(req) as ControllerRequest<Op>;
  } catch (err) {
    if (!isDroverError(err, ErrorCode.InvalidArgument)) throw err;
    const where = String(err.details['path'] ?? '');
    const field = where.replace(/[[{.].*$/, '');
    const flag = flags[where] ?? flags[field];
    const message = flag ? `${flag}${err.message.slice(where.length + 1)}` : err.message;
    throw new UsageError(message);
  }
}

/** Run `fn` with a connection to the controller; closes it afterwards. */
export async function withController<T>(
  argv: GlobalArgs,
  fn: (bus: Bus, ask: Ask) => Promise<T>,
): Promise<T> {
  const tls = tlsOf(argv);
  const bus = await Bus.connect({
    servers: argv.nats.split(','),
    name: 'drover-cli',
    requestTimeoutMs: argv.timeout * 1000,
    ...(tls ? { tls } : {}),
  });
  try {
    const client = new ControllerClient(bus);
    // A paged list comes whole (every page).
    return await fn(bus, (op, req) => callAllPages(client, op, req));
  } finally {
    await bus.close();
  }
}

/**
 * Call one controller operation and print the reply: JSON with `--json`, else `human(reply)`.
 * `req` may be built once connected (`ask` resolves job names to ids first); either way it is
 * checked against its schema before it is sent. `watch` starts before the request (its
 * subscriptions in place) and stops before the printing. Errors propagate to main, which maps
 * them to an exit code.
 */
export async function callController<Op extends ControllerOp>(
  argv: GlobalArgs,
  op: Op,
  req: ControllerRequest<Op> | ((ask: Ask) => Promise<ControllerRequest<Op>>),
  human: (reply: ControllerReplies[Op]) => string,
  watch?: Watcher,
  flags?: FlagNames,
): Promise<ControllerReplies[Op]> {
  // A request known before connecting is checked first: bad flags need no cluster.
  const ready = typeof req === 'function' ? null : validateRequest(op, req, flags);
  return withController(argv, async (bus, ask) => {
    const request =
      ready ??
      validateRequest(op, await (req as (a: Ask) => Promise<ControllerRequest<Op>>)(ask), flags);
    let stop: (() => void) | undefined;
    try {
      if (watch) {
        stop = watch(bus);
        await bus.flush();
      }
      const reply = await ask(op, request);
      stop?.();
      process.stdout.write((argv.json ? JSON.stringify(reply, null, 2) : human(reply)) + '\n');
      return reply;
    } finally {
      stop?.();
    }
  });
}
