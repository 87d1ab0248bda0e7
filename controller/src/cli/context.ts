/** What every command shares: global options, the connection to the controller, printing. */
import { Bus, callAllPages, ControllerClient } from '@drover/bus';
import type { ControllerOp, ControllerReplies, ControllerRequest } from '@drover/protocol';
import { DEFAULT_LOCAL_DIR, localNatsUrl, localTls } from '@drover/testbed/local-state';

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
 * operator certificate of the local cluster `drover up` left running (when it uses TLS).
 */
export function defaultTls(env: NodeJS.ProcessEnv = process.env): {
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
  const local = localTls(defaultLocalDir(env));
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

/**
 * Call one controller operation and print the reply: JSON with `--json`, else `human(reply)`.
 * `watch` starts before the request (its subscriptions in place) and stops before the printing.
 * Errors propagate to main, which maps them to an exit code.
 */
export async function callController<Op extends ControllerOp>(
  argv: GlobalArgs,
  op: Op,
  req: ControllerRequest<Op>,
  human: (reply: ControllerReplies[Op]) => string,
  watch?: Watcher,
): Promise<ControllerReplies[Op]> {
  const tls = tlsOf(argv);
  const bus = await Bus.connect({
    servers: argv.nats.split(','),
    name: 'drover-cli',
    requestTimeoutMs: argv.timeout * 1000,
    ...(tls ? { tls } : {}),
  });
  let stop: (() => void) | undefined;
  try {
    if (watch) {
      stop = watch(bus);
      await bus.flush();
    }
    // A paged list comes whole (every page).
    const reply = await callAllPages(new ControllerClient(bus), op, req);
    stop?.();
    process.stdout.write((argv.json ? JSON.stringify(reply, null, 2) : human(reply)) + '\n');
    return reply;
  } finally {
    stop?.();
    await bus.close();
  }
}

/**
 * A controller client for a command that makes many calls (e.g. `attach`): `run` gets it, the
 * connection closes when `run` settles.
 */
export async function withController<T>(
  argv: GlobalArgs,
  run: (client: ControllerClient) => Promise<T>,
): Promise<T> {
  const tls = tlsOf(argv);
  const bus = await Bus.connect({
    servers: argv.nats.split(','),
    name: 'drover-cli',
    requestTimeoutMs: argv.timeout * 1000,
    ...(tls ? { tls } : {}),
  });
  try {
    return await run(new ControllerClient(bus));
  } finally {
    await bus.close();
  }
}
