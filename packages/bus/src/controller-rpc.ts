/** The controller API over the bus: a validating server and a typed client (for the CLI). */
import { DroverError, ErrorCode, nullLogger, type Logger } from '@drover/common';
import {
  CONTROLLER_WILDCARD,
  ControllerOps,
  controllerSubject,
  decodeJson,
  failReply,
  isControllerOp,
  okReply,
  type ControllerOp,
  type ControllerReplies,
  type ControllerRequest,
} from '@drover/protocol';
import type { Bus } from './connection.js';

/** One handler per controller operation. */
export type ControllerHandlers = {
  [Op in ControllerOp]: (req: ControllerRequest<Op>) => Promise<ControllerReplies[Op]>;
};

/** Serve `drover.ctl.<op>`: size-checked, parsed and validated before any handler runs. */
export function serveControllerApi(
  bus: Bus,
  handlers: ControllerHandlers,
  logger: Logger = nullLogger,
): void {
  const log = logger.child({ component: 'controller-api' });
  const prefix = controllerSubject('');
  bus.serve(CONTROLLER_WILDCARD, async (subject, data) => {
    const op = subject.startsWith(prefix) ? subject.slice(prefix.length) : subject;
    try {
      if (!isControllerOp(op)) {
        throw new DroverError(ErrorCode.NotFound, `unknown operation ${op}`, {
          details: { subject },
        });
      }
      const req = ControllerOps[op].parse(decodeJson(data) ?? {}) as never;
      const handler = handlers[op] as (r: never) => Promise<unknown>;
      return okReply(await handler(req));
    } catch (err) {
      log.debug('request failed', { op, err });
      return failReply(err);
    }
  });
}

/** A typed client for the controller. */
export class ControllerClient {
  constructor(private readonly bus: Bus) {}

  async call<Op extends ControllerOp>(
    op: Op,
    req: ControllerRequest<Op>,
    timeoutMs?: number,
  ): Promise<ControllerReplies[Op]> {
    return (await this.bus.request(controllerSubject(op), req, timeoutMs)) as ControllerReplies[Op];
  }
}
