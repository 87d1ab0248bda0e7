/**
 * The controller's Prometheus metrics: every migration by mode and outcome with its downtime,
 * dump, transfer, restore and total times and the bytes it moved; operations by kind and
 * outcome; cluster checkpoints with their freeze skew; per host: reachable, cordoned, heartbeat
 * age, jobs by state (from heartbeats, read at each scrape); NATS reconnects; Node's own metrics
 * (event-loop lag). The list is in docs/OBSERVABILITY.md.
 */
import { Metrics, type Counter, type Histogram } from '@drover/metrics';
import type { MigrationRecord, OperationRecord } from '@drover/protocol';
import type { HostView } from './placement.js';

/** How a migration ended: moved, refused before anything was frozen, or failed (rolled back). */
export type MigrationOutcome = 'done' | 'refused' | 'failed';

/** The metrics of one controller. */
export class ControllerMetrics {
  readonly metrics = new Metrics();
  private readonly migrations: Counter<'mode' | 'outcome'>;
  private readonly bytes: Counter<'mode'>;
  private readonly phases: Record<
    'downtime' | 'dump' | 'transfer' | 'restore' | 'duration',
    Histogram<'mode'>
  >;
  private readonly operations: Counter<'kind' | 'outcome'>;
  private readonly freezeSkew: Histogram;
  readonly natsReconnects: Counter;

  constructor(hosts: () => readonly HostView[], now: () => number = Date.now) {
    const m = this.metrics;
    this.migrations = m.counter(
      'drover_migrations_total',
      'Migrations the controller ran, by mode and outcome (done, refused, failed)',
      ['mode', 'outcome'],
    );
    this.bytes = m.counter(
      'drover_migration_bytes_total',
      'Bytes of images and logs that migrations moved',
      ['mode'],
    );
    const h = (name: string, help: string): Histogram<'mode'> => m.histogram(name, help, ['mode']);
    this.phases = {
      downtime: h('drover_migration_downtime_seconds', 'How long a migrated job was frozen'),
      dump: h('drover_migration_dump_seconds', "CRIU's dump on the source, per migration"),
      transfer: h('drover_migration_transfer_seconds', 'Sending the images, per migration'),
      restore: h('drover_migration_restore_seconds', "CRIU's restore on the destination"),
      duration: h('drover_migration_duration_seconds', 'A migration from start to commit'),
    };
    this.operations = m.counter(
      'drover_operations_total',
      'Operations by kind (migrate, drain, checkpoint, restore) and outcome',
      ['kind', 'outcome'],
    );
    this.freezeSkew = m.histogram(
      'drover_checkpoint_freeze_skew_seconds',
      "Cluster checkpoints: between the first and the last job's freeze",
      [],
      [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    );
    this.natsReconnects = m.counter(
      'drover_nats_reconnects_total',
      'Times the NATS connection was re-established',
    );
    m.gauge('drover_host_up', '1 when the host sends heartbeats, else 0', ['host'], (g) => {
      g.reset();
      for (const x of hosts()) g.set({ host: x.host }, x.reachable ? 1 : 0);
    });
    m.gauge('drover_host_cordoned', '1 when the host takes no new work', ['host'], (g) => {
      g.reset();
      for (const x of hosts()) g.set({ host: x.host }, x.cordoned ? 1 : 0);
    });
    m.gauge(
      'drover_host_heartbeat_age_seconds',
      "Since the host's last heartbeat",
      ['host'],
      (g) => {
        g.reset();
        for (const x of hosts()) g.set({ host: x.host }, Math.max(0, now() - x.lastSeenMs) / 1000);
      },
    );
    m.gauge(
      'drover_jobs',
      "Jobs by host and state, from the hosts' last heartbeats",
      ['host', 'state'],
      (g) => {
        g.reset();
        for (const x of hosts()) {
          const counts = new Map<string, number>();
          for (const j of x.info.jobs) counts.set(j.state, (counts.get(j.state) ?? 0) + 1);
          for (const [state, n] of counts) g.set({ host: x.host, state }, n);
        }
      },
    );
  }

  /** A migration ended: `record` is its source's record when the controller could read it. */
  migration(
    outcome: MigrationOutcome,
    record: MigrationRecord | null,
    asked: string | undefined,
  ): void {
    const mode = record?.mode ?? asked ?? 'auto';
    this.migrations.inc({ mode, outcome });
    if (outcome !== 'done' || record === null) return;
    const s = record.stats;
    this.bytes.inc({ mode }, s.bytes);
    this.phases.downtime.observe({ mode }, s.frozenMs / 1000);
    this.phases.dump.observe({ mode }, s.dumpMs / 1000);
    this.phases.transfer.observe({ mode }, s.transferMs / 1000);
    this.phases.restore.observe({ mode }, s.restoreMs / 1000);
    this.phases.duration.observe({ mode }, s.totalMs / 1000);
  }

  /** An operation came back to its caller. */
  operation(op: Pick<OperationRecord, 'kind' | 'state' | 'freezeSkewMs'>): void {
    this.operations.inc({ kind: op.kind, outcome: op.state });
    if (op.kind === 'checkpoint' && op.state === 'done' && typeof op.freezeSkewMs === 'number')
      this.freezeSkew.observe(op.freezeSkewMs / 1000);
  }
}
