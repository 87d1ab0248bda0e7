/** What every command shares: global options, the connection to the controller, printing. */
import { Bus, ControllerClient } from '@drover/bus';
import type { ControllerOp, ControllerReplies, ControllerRequest } from '@drover/protocol';
import { DEFAULT_LOCAL_DIR, localNatsUrl } from '@drover/testbed/local-state';

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

/** Global options of every command. */
export interface GlobalArgs {
  nats: string;
  json: boolean;
  timeout: number;
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
  const bus = await Bus.connect({
    servers: argv.nats.split(','),
    name: 'drover-cli',
    requestTimeoutMs: argv.timeout * 1000,
  });
  let stop: (() => void) | undefined;
  try {
    if (watch) {
      stop = watch(bus);
      await bus.flush();
    }
    const reply = await new ControllerClient(bus).call(op, req);
    stop?.();
    process.stdout.write((argv.json ? JSON.stringify(reply, null, 2) : human(reply)) + '\n');
    return reply;
  } finally {
    stop?.();
    await bus.close();
  }
}
