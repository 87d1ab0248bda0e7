/** The controller's metrics: migrations by mode and outcome with their phases, hosts, jobs. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MigrationRecord } from '@drover/protocol';
import { ControllerMetrics } from './controller-metrics.js';
import type { HostView } from './placement.js';

test('migrations, operations, host and job gauges in Prometheus form', async () => {
  const hosts = [
    {
      host: 'h1',
      reachable: true,
      cordoned: false,
      lastSeenMs: 9_000,
      info: { jobs: [{ state: 'running' }, { state: 'running' }, { state: 'migrated' }] },
    },
    { host: 'h2', reachable: false, cordoned: true, lastSeenMs: 1_000, info: { jobs: [] } },
  ] as unknown as HostView[];
  const m = new ControllerMetrics(
    () => hosts,
    () => 10_000,
  );
  const rec = {
    mode: 'stop-copy',
    state: 'done',
    stats: {
      frozenMs: 250,
      dumpMs: 80,
      transferMs: 100,
      restoreMs: 60,
      totalMs: 400,
      bytes: 1000,
      files: 3,
      pages: 2,
    },
  } as MigrationRecord;
  m.migration('done', rec, undefined);
  m.migration('failed', { ...rec, state: 'rolled-back' }, 'stop-copy');
  m.migration('refused', null, undefined);
  m.operation({ kind: 'migrate', state: 'done' });
  m.operation({ kind: 'checkpoint', state: 'done', freezeSkewMs: 12 });
  const t = await m.metrics.text();
  assert.match(t, /^drover_migrations_total\{mode="stop-copy",outcome="done"\} 1$/m);
  assert.match(t, /^drover_migrations_total\{mode="stop-copy",outcome="failed"\} 1$/m);
  assert.match(t, /^drover_migrations_total\{mode="auto",outcome="refused"\} 1$/m);
  assert.match(t, /^drover_migration_downtime_seconds_sum\{mode="stop-copy"\} 0\.25$/m);
  assert.match(t, /^drover_migration_downtime_seconds_count\{mode="stop-copy"\} 1$/m);
  assert.match(t, /^drover_migration_dump_seconds_sum\{mode="stop-copy"\} 0\.08$/m);
  assert.match(t, /^drover_migration_transfer_seconds_count\{mode="stop-copy"\} 1$/m);
  assert.match(t, /^drover_migration_restore_seconds_count\{mode="stop-copy"\} 1$/m);
  assert.match(t, /^drover_migration_duration_seconds_sum\{mode="stop-copy"\} 0\.4$/m);
  assert.match(t, /^drover_migration_bytes_total\{mode="stop-copy"\} 1000$/m);
  assert.match(t, /^drover_operations_total\{kind="checkpoint",outcome="done"\} 1$/m);
  assert.match(t, /^drover_checkpoint_freeze_skew_seconds_sum 0\.012$/m);
  assert.match(t, /^drover_host_up\{host="h1"\} 1$/m);
  assert.match(t, /^drover_host_up\{host="h2"\} 0$/m);
  assert.match(t, /^drover_host_cordoned\{host="h2"\} 1$/m);
  assert.match(t, /^drover_host_heartbeat_age_seconds\{host="h1"\} 1$/m);
  assert.match(t, /^drover_host_heartbeat_age_seconds\{host="h2"\} 9$/m);
  assert.match(t, /^drover_jobs\{host="h1",state="running"\} 2$/m);
  assert.match(t, /^drover_jobs\{host="h1",state="migrated"\} 1$/m);
  assert.match(t, /^nodejs_eventloop_lag_seconds /m);
});
