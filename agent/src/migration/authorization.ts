/**
 * The destination's migration authorizations: the controller allows one incoming migration of a
 * job from a source host with a secret ticket (`migrate-authorize`); `migrate-prepare` must
 * present it. Each ticket is used once and lapses after its TTL. Kept in memory only: an agent
 * restart forgets them, and the controller's next attempt authorizes again.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { DroverError, ErrorCode } from '@drover/common';
import { MIGRATION_TICKET_TTL_MS } from '@drover/protocol';

/** At most this many authorizations wait at once (a controller never needs nearly as many). */
export const MAX_PENDING_AUTHORIZATIONS = 1024;

interface Authorization {
  jobId: string;
  source: string;
  digest: Buffer;
  expiresAtMs: number;
}

/** One agent's pending authorizations of incoming migrations. */
export class MigrationAuthorizations {
  private readonly pending: Authorization[] = [];

  constructor(private readonly now: () => number = Date.now) {}

  /** Allow one migration of `jobId` from `source` proven by `ticket`; returns its expiry. */
  authorize(req: { jobId: string; source: string; ticket: string; ttlMs?: number }): {
    expiresAt: string;
  } {
    this.prune();
    if (this.pending.length >= MAX_PENDING_AUTHORIZATIONS) {
      throw new DroverError(
        ErrorCode.Unavailable,
        `too many pending migration authorizations (${MAX_PENDING_AUTHORIZATIONS})`,
        { retryable: true },
      );
    }
    const expiresAtMs = this.now() + (req.ttlMs ?? MIGRATION_TICKET_TTL_MS);
    this.pending.push({
      jobId: req.jobId,
      source: req.source,
      digest: ticketDigest(req.ticket),
      expiresAtMs,
    });
    return { expiresAt: new Date(expiresAtMs).toISOString() };
  }

  /**
   * Use up the authorization matching `ticket`, `jobId` and `source`. Throws PERMISSION_DENIED,
   * consuming nothing, when there is none (never given, expired, already used, or for another
   * job or source).
   */
  consume(req: { jobId: string; source: string; ticket: string }): void {
    this.prune();
    const d = ticketDigest(req.ticket);
    const i = this.pending.findIndex(
      (a) => timingSafeEqual(a.digest, d) && a.jobId === req.jobId && a.source === req.source,
    );
    if (i < 0) {
      throw new DroverError(
        ErrorCode.PermissionDenied,
        `migration of job ${req.jobId} from ${req.source} is not authorized here (no valid ticket from the controller: never given, expired or already used)`,
        { details: { jobId: req.jobId, source: req.source } },
      );
    }
    this.pending.splice(i, 1);
  }

  /** Authorizations still waiting (for tests and status). */
  get size(): number {
    this.prune();
    return this.pending.length;
  }

  private prune(): void {
    const t = this.now();
    for (let i = this.pending.length - 1; i >= 0; i--) {
      if (this.pending[i]!.expiresAtMs <= t) this.pending.splice(i, 1);
    }
  }
}

/** sha256 of a ticket: equal lengths for timingSafeEqual, and no ticket kept where it is checked. */
export function ticketDigest(ticket: string): Buffer {
  return createHash('sha256').update(ticket, 'utf8').digest();
}
