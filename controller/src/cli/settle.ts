/**
 * An operation's outcome even when its controller dies while the CLI waits: the CLI names the
 * operation (`opId`) in its request, and if the reply is lost with the controller it asks the next
 * controller for that operation's record until the record is no longer `running` — a new
 * controller reconciles what its predecessor left (controller/src/migrate-op.ts).
 */
import { ControllerClient } from '@drover/bus';
import { DroverError, ErrorCode, isDroverError, newId } from '@drover/common';
import type { ControllerRequest, OperationRecord } from '@drover/protocol';
import {
  validateRequest,
  withController,
  type Ask,
  type GlobalArgs,
  type Watcher,
} from './context.js';

/** Pause between two asks of the operation's record. */
const POLL_MS = 1000;

/**
 * Call `op` with the request `req` builds (once connected: it may resolve names) plus a fresh
 * `opId`, print the record (JSON, or `human`), return it. When the controller goes away with the
 * request (UNAVAILABLE, TIMEOUT), wait for the operation's outcome from the next controller, for
 * up to `--timeout` more seconds.
 */
export async function callAndSettle(
  argv: GlobalArgs,
  op: 'migrate',
  req: (ask: Ask) => Promise<Omit<ControllerRequest<'migrate'>, 'opId'>>,
  human: (reply: OperationRecord) => string,
  watch?: Watcher,
): Promise<OperationRecord> {
  return withController(argv, async (bus, ask) => {
    const opId = newId('op');
    const request = validateRequest(op, { ...(await req(ask)), opId });
    const client = new ControllerClient(bus);
    let stop: (() => void) | undefined;
    try {
      if (watch) {
        stop = watch(bus);
        await bus.flush();
      }
      let reply: OperationRecord;
      try {
        reply = await client.call(op, request);
      } catch (err) {
        if (!lostWithController(err)) throw err;
        process.stderr.write(
          `drover: lost the controller while it ran ${op} ${opId}; waiting for its outcome\n`,
        );
        reply = await outcome(client, opId, argv.timeout * 1000, err);
      }
      stop?.();
      process.stdout.write((argv.json ? JSON.stringify(reply, null, 2) : human(reply)) + '\n');
      return reply;
    } finally {
      stop?.();
    }
  });
}

/** The request may have reached a controller that then went away: its outcome is to be asked. */
function lostWithController(err: unknown): boolean {
  return isDroverError(err, ErrorCode.Unavailable) || isDroverError(err, ErrorCode.Timeout);
}

/**
 * Ask for operation `opId` until its record is settled. NOT_FOUND from a controller means no
 * controller recorded it: the request never got that far and nothing was done.
 */
async function outcome(
  client: ControllerClient,
  opId: string,
  timeoutMs: number,
  lost: unknown,
): Promise<OperationRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await client.call('status', { opId }, Math.max(1000, deadline - Date.now()));
      if (r.state !== 'running' && r.state !== 'pending') return r;
    } catch (err) {
      if (isDroverError(err, ErrorCode.NotFound)) {
        throw new DroverError(
          ErrorCode.Unavailable,
          `the controller went away before it recorded operation ${opId}: nothing was done`,
          { cause: lost, details: { opId } },
        );
      }
      if (!lostWithController(err)) throw err;
    }
    if (Date.now() > deadline) {
      throw new DroverError(
        ErrorCode.Unavailable,
        `operation ${opId} has no outcome yet (see drover status ${opId})`,
        { cause: lost, details: { opId, outcomeUnknown: true } },
      );
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
