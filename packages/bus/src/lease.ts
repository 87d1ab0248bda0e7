/** Leader leases in a state bucket: acquire, renew and release by compare-and-set, and a keeper. */
import { performance } from 'node:perf_hooks';
import { DroverError, ErrorCode } from '@drover/common';
import type { StateStore } from './state-store.js';

/** What a lease key holds. `expiresAt` is wall-clock epoch milliseconds of the writer. */
export interface LeaseRecord {
  holder: string;
  expiresAt: number;
}

/** Options for {@link Lease.acquire}. */
export interface LeaseOptions {
  /**
   * The largest wall-clock difference assumed between any two contenders (NTP-synced hosts:
   * tens of ms). The holder stops trusting its lease this long before `expiresAt`. Default 0.
   */
  maxClockSkewMs?: number;
}

/**
 * A lease on one key, held by one named holder until `expiresAt`.
 *
 * Expiry is enforced by the contenders, not the server: nats-server 2.9.10 silently ignores
 * per-key TTL, so an expired record just stays until someone overwrites it. A contender may take
 * a lease over only when its own wall clock is past `expiresAt`; every write is a CAS on the
 * revision, so two contenders never both succeed.
 *
 * Clock assumptions: contenders' wall clocks differ by at most `maxClockSkewMs`, and that is
 * small next to the TTL. The holder measures its own deadline on the monotonic clock, from just
 * before its write, minus `maxClockSkewMs`: so a holder never believes it holds a lease another
 * contender (whose clock may run up to `maxClockSkewMs` ahead) already sees as expired, and a
 * wall-clock jump on the holder cannot extend its belief. A holder's process pause (GC, SIGSTOP)
 * longer than the TTL is caught by `isHeld()` turning false, not by the server.
 */
export class Lease {
  private deadline: number;
  private released = false;

  private constructor(
    private readonly store: StateStore<LeaseRecord>,
    /** The lease key. */
    readonly key: string,
    /** Who holds it. */
    readonly holder: string,
    /** Lease length in ms. */
    readonly ttlMs: number,
    private readonly skewMs: number,
    private revision: number,
    startedAt: number,
  ) {
    this.deadline = startedAt + ttlMs - skewMs;
  }

  /**
   * Take the lease if it is free, expired, or already ours. Held by another and not expired:
   * FAILED_PRECONDITION (retryable) with `{key, holder, expiresAt}`.
   */
  static async acquire(
    store: StateStore<LeaseRecord>,
    key: string,
    holder: string,
    ttlMs: number,
    options: LeaseOptions = {},
  ): Promise<Lease> {
    const skewMs = options.maxClockSkewMs ?? 0;
    if (!(ttlMs > 0) || skewMs < 0 || skewMs >= ttlMs) {
      throw new DroverError(ErrorCode.InvalidArgument, 'need ttlMs > maxClockSkewMs >= 0', {
        details: { ttlMs, maxClockSkewMs: skewMs },
      });
    }
    let startedAt = performance.now();
    const written = await store.mutate(key, (cur) => {
      const now = Date.now();
      if (cur !== null && cur.holder !== holder && now < cur.expiresAt) {
        throw new DroverError(
          ErrorCode.FailedPrecondition,
          `lease ${key} is held by ${cur.holder}`,
          {
            retryable: true,
            details: { key, holder: cur.holder, expiresAt: cur.expiresAt },
          },
        );
      }
      startedAt = performance.now();
      return { holder, expiresAt: now + ttlMs };
    });
    if (written === null) throw new DroverError(ErrorCode.Internal, `lease ${key} write vanished`);
    return new Lease(store, key, holder, ttlMs, skewMs, written.revision, startedAt);
  }

  /** True while the lease is ours by our own monotonic clock (see the class comment). */
  isHeld(): boolean {
    return !this.released && performance.now() < this.deadline;
  }

  /**
   * Extend the lease by `ttlMs` from now. Fails with FAILED_PRECONDITION (not retryable) when
   * someone else wrote the key since our last write (the lease is lost), or when it was released.
   * UNAVAILABLE (retryable) when NATS does not answer: the lease may still be ours.
   */
  async renew(): Promise<void> {
    if (this.released) throw this.lost('it was released');
    const startedAt = performance.now();
    try {
      this.revision = await this.store.update(
        this.key,
        { holder: this.holder, expiresAt: Date.now() + this.ttlMs },
        this.revision,
      );
    } catch (err) {
      if (err instanceof DroverError && err.code === ErrorCode.FailedPrecondition) {
        this.released = true;
        throw this.lost('another holder wrote it', err);
      }
      throw err;
    }
    this.deadline = startedAt + this.ttlMs - this.skewMs;
  }

  /** Give the lease up (a CAS delete, so a lease already taken over is left alone). */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    try {
      await this.store.delete(this.key, this.revision);
    } catch (err) {
      // Stale revision: someone else holds it now; there is nothing of ours to free.
      if (err instanceof DroverError && err.code === ErrorCode.FailedPrecondition) return;
      throw err;
    }
  }

  private lost(why: string, cause?: unknown): DroverError {
    return new DroverError(
      ErrorCode.FailedPrecondition,
      `lease ${this.key} lost by ${this.holder}: ${why}`,
      {
        cause,
        details: { key: this.key, holder: this.holder },
      },
    );
  }
}

/** Options for {@link LeaseKeeper}. */
export interface LeaseKeeperOptions {
  /** Called once when the lease is lost (taken over, released, or NATS away too long). */
  onLost: (err: DroverError) => void;
  /** Renewal period. Default ttl/3. */
  intervalMs?: number;
  /**
   * How long renewals may keep failing with a retryable error (NATS unavailable) before the
   * lease counts as lost, from the last successful renewal. Default 3 × ttl or 30 s, whichever
   * is longer (a leader election on a loaded 3-node cluster was measured at up to ~8 s).
   */
  maxOutageMs?: number;
}

/**
 * Renews a lease every ttl/3 until stopped or lost; reports loss once through `onLost`.
 *
 * It rides over a NATS outage (a server died, the bucket's leader is being elected): renewals
 * that fail with a retryable error are retried, even past the lease's expiry, for up to
 * `maxOutageMs`. That is safe because every takeover is a compare-and-set write: while the
 * bucket cannot be written nobody can take the lease over, and a renewal that succeeds on our
 * last revision proves nobody did. A renewal refused because another holder wrote the key is
 * a loss at once.
 */
export class LeaseKeeper {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  private lastRenewed = performance.now();

  constructor(
    /** The lease being kept. */
    readonly lease: Lease,
    private readonly options: LeaseKeeperOptions,
  ) {}

  /** Start renewing (the first renewal is one interval from now). */
  start(): this {
    this.lastRenewed = performance.now();
    this.schedule(this.interval());
    return this;
  }

  /** Stop renewing; the lease is kept until it expires or is released. */
  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
  }

  private interval(): number {
    return this.options.intervalMs ?? this.lease.ttlMs / 3;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    // setTimeout after each renewal, not setInterval: a slow renewal never overlaps the next.
    this.timer = setTimeout(() => void this.tick(), ms);
  }

  private async tick(): Promise<void> {
    try {
      await this.lease.renew();
      this.lastRenewed = performance.now();
    } catch (err) {
      if (this.stopped) return;
      const e =
        err instanceof DroverError
          ? err
          : new DroverError(ErrorCode.Internal, String(err), { cause: err });
      const outage = performance.now() - this.lastRenewed;
      const maxOutage = this.options.maxOutageMs ?? Math.max(3 * this.lease.ttlMs, 30_000);
      if (!e.retryable || outage > maxOutage) {
        this.stop();
        this.options.onLost(e);
        return;
      }
      // NATS is away: try again soon rather than a full interval later.
      this.schedule(Math.min(this.interval(), 250));
      return;
    }
    this.schedule(this.interval());
  }
}
