/** What every command shares: global options, the connection to the controller, printing. */
import { Bus, ControllerClient } from '@drover/bus';
import type { ControllerOp, ControllerReplies, ControllerRequest } from '@drover/protocol';

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
