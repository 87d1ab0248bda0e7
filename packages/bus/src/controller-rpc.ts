/** The controller API over the bus: a validating server and a typed client (for the CLI). */
import { DroverError, ErrorCode, nullLogger, type Logger } from '@drover/common';
import {
  CONTROLLER_WILDCARD,
  ControllerOps,
  controllerSubject,
  decodeJson,
  parseControllerSubject,
  failReply,
  isControllerOp,
  okReply,
  type ControllerOp,
  type ControllerReplies,
  type ControllerRequest,
  type Identity,
} from '@drover/protocol';
import type { Bus } from './connection.js';

/** One handler per controller operation. */
export type ControllerHandlers = {
  [Op in ControllerOp]: (req: ControllerRequest<Op>) => Promise<ControllerReplies[Op]>;
};

/**
 * Watches every validated request (the audit stream): `asked` runs before the handler — when it
 * throws, the request fails with its error and nothing runs — and returns what to call with the
 * outcome once the handler is done. Null: this request is not recorded.
 */
export type ControllerAudit = (call: {
  op: ControllerOp;
  caller: Identity | null;
  request: unknown;
}) => Promise<((outcome: { result?: unknown; error?: unknown }) => Promise<void>) | null>;

/**
 * Serve `drover.ctl.<op>[.<role>.<name>]`: size-checked, parsed and validated before any handler
 * runs; `audit` sees each request with the caller its subject names.
 */
export function serveControllerApi(
  bus: Bus,
  handlers: ControllerHandlers,
  logger: Logger = nullLogger,
  audit?: ControllerAudit,
): void {
  const log = logger.child({ component: 'controller-api' });
  bus.serve(CONTROLLER_WILDCARD, async (subject, data) => {
    const parsed = parseControllerSubject(subject);
    const op = parsed?.op ?? subject;
    try {
      if (!parsed || !isControllerOp(parsed.op)) {
        throw new DroverError(ErrorCode.NotFound, `unknown operation ${op}`, {
          details: { subject },
        });
      }
      const req = ControllerOps[parsed.op].parse(decodeJson(data) ?? {}) as never;
      const handler = handlers[parsed.op] as (r: never) => Promise<unknown>;
      const answered = audit
        ? await audit({ op: parsed.op, caller: parsed.caller, request: req })
        : null;
      // The outcome's record never changes the reply.
      const record = (o: { result?: unknown; error?: unknown }): Promise<void> =>
        answered
          ? answered(o).catch((e: unknown) => log.warn('audit failed', { op, err: e }))
          : Promise.resolve();
      let result: unknown;
      try {
        result = await handler(req);
      } catch (err) {
        await record({ error: err });
        throw err;
      }
      await record({ result });
      return okReply(result);
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
    const subject = controllerSubject(op, this.bus.identity ?? undefined);
    return (await this.bus.request(subject, req, timeoutMs)) as ControllerReplies[Op];
  }
}
