/**
 * What the web console shows, kept current: the controller's hosts, jobs, operations, image sets
 * and audit trail (asked every `pollMs`), and the agents' events as they happen (migration
 * progress, job states), pushed to every watcher at once.
 */
import { callAllPages, ControllerClient, type Bus } from '@drover/bus';
import { nullLogger, type Logger } from '@drover/common';
import { EVENT_WILDCARD } from '@drover/protocol';
import type { ConsoleEvent, ConsoleSnapshot } from './web/wire.js';

export type { ConsoleEvent, ConsoleSnapshot } from './web/wire.js';

/** Watches the cluster for the console. */
export class ClusterView {
  private snapshot: ConsoleSnapshot = {
    at: new Date(0).toISOString(),
    hosts: [],
    jobs: [],
    ops: [],
    sets: [],
    audit: [],
    error: 'not read yet',
  };
  private readonly listeners = new Set<(kind: 'snapshot' | 'event', data: unknown) => void>();
  private timer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  private readonly client: ControllerClient;
  private polling: Promise<void> | null = null;

  constructor(
    bus: Bus,
    private readonly options: { pollMs?: number; logger?: Logger } = {},
    private readonly subscribe = (fn: (s: string, v: unknown) => void) =>
      bus.subscribe(EVENT_WILDCARD, fn),
  ) {
    this.client = new ControllerClient(bus);
  }

  /** Start polling and listening; resolves after the first poll. */
  async start(): Promise<void> {
    this.unsubscribe = this.subscribe((subject, value) => {
      const [, , host = '', kind = ''] = subject.split('.');
      this.emit('event', { host, kind, value } satisfies ConsoleEvent);
    });
    await this.poll();
    this.timer = setInterval(() => void this.poll(), this.options.pollMs ?? 1500);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.unsubscribe?.();
  }

  /** The latest picture. */
  current(): ConsoleSnapshot {
    return this.snapshot;
  }

  /** Follow snapshots and events; returns how to stop. */
  watch(fn: (kind: 'snapshot' | 'event', data: unknown) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Ask the controller for everything the page shows (one poll at a time). */
  poll(): Promise<void> {
    this.polling ??= this.pollOnce().finally(() => (this.polling = null));
    return this.polling;
  }

  private async pollOnce(): Promise<void> {
    const t = 10_000;
    try {
      const [hosts, jobs, ops, sets, audit] = await Promise.all([
        // Lists of any size come whole (every page).
        callAllPages(this.client, 'hosts', {}, t),
        callAllPages(this.client, 'jobs', {}, t),
        this.client.call('ops', { limit: 30 }, t),
        callAllPages(this.client, 'images-list', {}, t),
        this.client.call('audit', { limit: 50, newest: true }, t),
      ]);
      this.snapshot = {
        at: new Date().toISOString(),
        hosts: hosts.hosts,
        jobs: jobs.jobs,
        ops: ops.ops,
        sets: sets.sets,
        audit: audit.entries,
        error: null,
      };
    } catch (err) {
      (this.options.logger ?? nullLogger).warn('console cannot read the cluster', { err });
      this.snapshot = { ...this.snapshot, error: (err as Error).message };
    }
    this.emit('snapshot', this.snapshot);
  }

  private emit(kind: 'snapshot' | 'event', data: unknown): void {
    for (const fn of [...this.listeners]) fn(kind, data);
  }
}
