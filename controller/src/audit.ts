/**
 * The audit stream: who asked the controller for what, and what came of it. Every request that
 * changes something is recorded twice in the JetStream stream `DROVER_AUDIT`
 * (`drover.audit.<role>.<name>.<op>`): `asked` before the controller acts — if that record
 * cannot be stored the request fails and nothing is done — and `answered` with the outcome.
 * The caller is the identity the request's subject names; NATS only lets a client publish with
 * its own certificate's role and name, so on a secure cluster it cannot be forged.
 */
import { randomUUID } from 'node:crypto';
import type { ControllerAudit, EventLog } from '@drover/bus';
import { isDroverError, type Logger } from '@drover/common';
import { readHistory } from './event-history.js';
import {
  fitBytes,
  ANONYMOUS_CALLER,
  auditSubject,
  CONTROLLER_OP_ACCESS,
  type AuditEntry,
  type ControllerReplies,
  type ControllerRequest,
} from '@drover/protocol';

/** What replaces a secret in a recorded request. */
export const REDACTED = '***';

/** Space the audit stream reserves in JetStream: about 500,000 records; the oldest go first. */
export const AUDIT_MAX_BYTES = 256 * 1024 ** 2;

/**
 * A request as recorded: the values of every `env` map (a job's environment may hold secrets)
 * replaced by `***`, names kept.
 */
export function redactRequest(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactRequest);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] =
      k === 'env' && v !== null && typeof v === 'object' && !Array.isArray(v)
        ? Object.fromEntries(Object.keys(v).map((name) => [name, REDACTED]))
        : // What is typed on a job's terminal (`tty-write`) may be a password.
          k === 'data' && typeof v === 'string'
          ? REDACTED
          : redactRequest(v);
  }
  return out;
}

/** The audit stream of one controller. */
export class Audit {
  constructor(
    private readonly log: EventLog,
    private readonly controllerId: string,
    /** The controller runs on NATS with TLS and roles: callers' names were enforced. */
    private readonly verified: boolean,
    private readonly logger: Logger,
  ) {}

  /** The hook for `serveControllerApi`: records every request that changes something. */
  readonly hook: ControllerAudit = async ({ op, caller, request }) => {
    if (CONTROLLER_OP_ACCESS[op] !== 'change') return null;
    const id = randomUUID();
    const subject = auditSubject(caller, op);
    const who = { ...(caller ?? ANONYMOUS_CALLER), verified: this.verified && caller !== null };
    const base = { id, op, caller: who, controller: this.controllerId };
    const asked: AuditEntry = { ...base, phase: 'asked', request: redactRequest(request) };
    await this.log.append(subject, asked);
    const started = Date.now();
    return async ({ result, error }) => {
      const answered: AuditEntry = {
        ...base,
        phase: 'answered',
        durationMs: Date.now() - started,
        ...(error === undefined
          ? { outcome: 'ok', ...resultIdOf(result) }
          : {
              outcome: isDroverError(error) ? error.code : 'INTERNAL',
              message: String((error as Error)?.message ?? error).slice(0, 512),
            }),
      };
      await this.log.append(subject, answered).catch((err: unknown) => {
        this.logger.warn('cannot record an audit outcome', { op, id, err });
      });
    };
  };

  /** Records oldest first (after `sinceSeq`, or the newest), by caller name and operation. */
  async read(req: ControllerRequest<'audit'>): Promise<ControllerReplies['audit']> {
    const got = await readHistory(this.log, {
      limit: req.limit ?? 100,
      subjectFilter: auditSubject({ role: '*', name: req.caller ?? '*' }, req.op ?? '*'),
      ...(req.sinceSeq !== undefined ? { sinceSeq: req.sinceSeq } : {}),
      ...(req.newest !== undefined ? { newest: req.newest } : {}),
    });
    // A page never holds more than a reply can carry: the rest is asked for from `next`.
    const page = fitBytes(
      got.map((e) => ({
        seq: e.seq,
        time: e.time,
        subject: e.subject,
        entry: e.value as AuditEntry,
      })),
    );
    return { entries: page.items, next: page.cut ? (page.items.at(-1)?.seq ?? null) : null };
  }
}

/** The id of what a request made or acted on: an operation's, a job's or a host's. */
function resultIdOf(result: unknown): { resultId?: string } {
  if (result === null || typeof result !== 'object') return {};
  const r = result as Record<string, unknown>;
  const id = [r['opId'], r['id'], r['host']].find((x) => typeof x === 'string');
  return typeof id === 'string' ? { resultId: id } : {};
}
