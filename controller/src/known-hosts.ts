/**
 * The hosts this cluster has, remembered across controllers (`drover_hosts`), and whether a
 * controller is ready: it has heard from every one of them, or waited long enough that the silent
 * ones really are unreachable. A controller that has just started answers what depends on hosts
 * only once ready, so it never says "no such job" or "no such host" for something that exists
 * because a heartbeat had not reached it yet.
 */
import type { StateStore } from '@drover/bus';
import type { Logger } from '@drover/common';

/** One remembered host. */
export interface KnownHost {
  /** When a controller last wrote it down (refreshed at most every REFRESH_MS). */
  seenAt: string;
}

/** A remembered host's record is refreshed this often while it sends heartbeats. */
const REFRESH_MS = 3600_000;
/** Hosts silent for longer than this are forgotten (decommissioned): no controller waits on them. */
export const FORGET_AFTER_MS = 7 * 24 * 3600_000;

/** The remembered hosts and the readiness they give. */
export class KnownHosts {
  private readonly expected = new Set<string>();
  private readonly heard = new Set<string>();
  private readonly written = new Map<string, number>();
  private readonly waiters: (() => void)[] = [];
  private isReady = false;
  private timer: NodeJS.Timeout | null = null;

  private constructor(
    private readonly store: Pick<StateStore<KnownHost>, 'list' | 'put' | 'delete'>,
    private readonly log: Logger,
  ) {}

  /**
   * Load the remembered hosts; ready once each has been heard from, or after `waitMs` (the
   * controller's unreachable timeout: by then a silent host is an unreachable one).
   */
  static async load(
    store: Pick<StateStore<KnownHost>, 'list' | 'put' | 'delete'>,
    waitMs: number,
    log: Logger,
    now: () => number = Date.now,
  ): Promise<KnownHosts> {
    const k = new KnownHosts(store, log);
    for (const [host, v] of await store.list()) {
      if (now() - Date.parse(v.value.seenAt) > FORGET_AFTER_MS) {
        await store.delete(host).catch(() => undefined);
        continue;
      }
      k.expected.add(host);
      k.written.set(host, Date.parse(v.value.seenAt));
    }
    if (k.expected.size === 0) k.settle('no hosts remembered');
    else {
      k.timer = setTimeout(() => k.settle('waited out the silent hosts'), waitMs);
      k.timer.unref();
    }
    return k;
  }

  /** Hosts remembered from before this controller that it has not heard from. */
  missing(): string[] {
    return [...this.expected].filter((h) => !this.heard.has(h)).sort();
  }

  /** True when `host` is one the cluster has (remembered or heard). */
  has(host: string): boolean {
    return this.expected.has(host) || this.heard.has(host);
  }

  /** Whether every remembered host has been heard from (or waited for long enough). */
  get ready(): boolean {
    return this.isReady;
  }

  /** Resolves once ready. */
  whenReady(): Promise<void> {
    return this.isReady ? Promise.resolve() : new Promise((r) => this.waiters.push(r));
  }

  /** A heartbeat from `host`: remember it (written down on first sight and then hourly). */
  heardFrom(host: string, now = Date.now()): void {
    this.heard.add(host);
    const last = this.written.get(host);
    if (last === undefined || now - last > REFRESH_MS) {
      this.written.set(host, now);
      void this.store
        .put(host, { seenAt: new Date(now).toISOString() })
        .catch((err: unknown) => this.log.warn('cannot remember host', { host, err }));
    }
    if (!this.isReady && this.missing().length === 0) this.settle('heard from every host');
  }

  /** Forget `host` (removed from the cluster): no controller waits to hear from it again. */
  async forget(host: string): Promise<void> {
    this.expected.delete(host);
    this.heard.delete(host);
    this.written.delete(host);
    await this.store.delete(host);
    if (!this.isReady && this.missing().length === 0) this.settle('heard from every host');
  }

  /** Stop waiting (the controller is closing). */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
  }

  private settle(why: string): void {
    if (this.isReady) return;
    this.isReady = true;
    if (this.timer) clearTimeout(this.timer);
    const missing = this.missing();
    this.log.info('controller ready', { why, ...(missing.length ? { silent: missing } : {}) });
    for (const w of this.waiters.splice(0)) w();
  }
}
