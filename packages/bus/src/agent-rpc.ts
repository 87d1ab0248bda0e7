/** The agent API over the bus: a server that validates and dispatches, and a typed client. */
import { DroverError, ErrorCode, nullLogger, type Logger } from '@drover/common';
import {
  agentSubject,
  agentWildcard,
  AgentOps,
  decodeJson,
  failReply,
  isAgentOp,
  okReply,
  opOfSubject,
  type AgentOp,
  type AgentReplies,
  type AgentRequest,
} from '@drover/protocol';
import type { Bus } from './connection.js';

/** One handler per agent operation. */
export type AgentHandlers = {
  [Op in AgentOp]: (req: AgentRequest<Op>) => Promise<AgentReplies[Op]>;
};

/**
 * Serve the agent API of `hostId`: each request is size-checked, parsed, validated against its
 * schema, and answered with a result or a typed failure; nothing reaches a handler unvalidated.
 */
export function serveAgentApi(
  bus: Bus,
  hostId: string,
  handlers: AgentHandlers,
  logger: Logger = nullLogger,
): void {
  const log = logger.child({ component: 'agent-api' });
  bus.serve(agentWildcard(hostId), async (subject, data) => {
    const op = opOfSubject(hostId, subject);
    try {
      if (op === null || !isAgentOp(op)) {
        throw new DroverError(ErrorCode.NotFound, `unknown operation ${op ?? subject}`, {
          details: { subject },
        });
      }
      const raw = decodeJson(data) ?? {};
      const req = AgentOps[op].parse(raw) as never;
      const handler = handlers[op] as (r: never) => Promise<unknown>;
      return okReply(await handler(req));
    } catch (err) {
      log.debug('request failed', { op, err });
      return failReply(err);
    }
  });
}

/** A typed client for one agent's API. */
export class AgentClient {
  constructor(
    private readonly bus: Bus,
    readonly hostId: string,
  ) {}

  /** Call `op` with `req`; resolves with the typed reply or throws the remote failure. */
  async call<Op extends AgentOp>(
    op: Op,
    req: AgentRequest<Op>,
    timeoutMs?: number,
  ): Promise<AgentReplies[Op]> {
    return (await this.bus.request(
      agentSubject(this.hostId, op),
      req,
      timeoutMs,
    )) as AgentReplies[Op];
  }
}
