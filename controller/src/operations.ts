/**
 * How the controller runs its operations: the context each kind gets (migrate-op.ts, drain.ts,
 * cluster-checkpoint.ts and cluster-restore.ts take only what they use), and carrying on, once
 * acting, the operations a previous controller left running.
 */
import type { ObjectFiles, StateStore } from '@drover/bus';
import { DroverError, ErrorCode, type Logger } from '@drover/common';
import type {
  ClusterJob,
  ImageSet,
  MigrationMode,
  MigrationRecord,
  OperationRecord,
} from '@drover/protocol';
import { runCheckpoint } from './cluster-checkpoint.js';
import type { ClusterContext } from './cluster-context.js';
import { runRestore } from './cluster-restore.js';
import type { ControllerMetrics } from './controller-metrics.js';
import { runDrain, type DrainContext } from './drain.js';
import type { AgentCall } from './host-access.js';
import type { JobAddresses } from './job-addresses.js';
import { isLive } from './job-records.js';
import { jobsOfHost } from './listing.js';
import { authorizedMigrate, reconcileMigrate, type MigrateContext } from './migrate-op.js';
import type { HostView } from './placement.js';

/** What the operations use of the controller. */
export interface OperationsHost {
  ops: StateStore<OperationRecord>;
  sets: StateStore<ImageSet>;
  keys: StateStore<{ key: string }>;
  objects: ObjectFiles;
  log: Logger;
  imageRetention: number;
  /** A cluster checkpoint's dumps at once on one host (0, the default: one per CPU). */
  dumpsPerHost?: number;
  metrics: ControllerMetrics | null;
  addresses: JobAddresses;
  views(): HostView[];
  agent: AgentCall;
  whereIs(jobId: string): Promise<{ host: string; state: string } | null>;
  /** Rejects unless `host` is known, reachable (or answers when asked) and not cordoned. */
  usableHost(host: string): Promise<void>;
  cordon(host: string): Promise<void>;
  /** Every job record of the reachable hosts. */
  allJobs(): Promise<ClusterJob[]>;
}

/** What a cluster checkpoint or restore gets. */
export function clusterContext(c: OperationsHost): ClusterContext {
  return {
    ops: c.ops,
    sets: c.sets,
    keys: c.keys,
    objects: c.objects,
    log: c.log,
    retention: c.imageRetention,
    ...(c.dumpsPerHost === undefined ? {} : { dumpsPerHost: c.dumpsPerHost }),
    hosts: () => c.views(),
    agent: c.agent,
    whereIs: (jobId) => c.whereIs(jobId),
    allJobs: () => c.allJobs(),
    usableHost: (host) => c.usableHost(host),
    claimAddress: async (jobId, name, network) => {
      await c.addresses.book.claim(jobId, name, network);
      if (name !== null && network.mode === 'job') await c.addresses.publishNames();
    },
  };
}

/** Authorize on the destination, then migrate from the source (migrate-op.ts). */
function migrateVia(
  c: OperationsHost,
): (
  source: string,
  jobId: string,
  destination: string,
  mode?: MigrationMode,
) => Promise<{ record: MigrationRecord | null; error: DroverError | null }> {
  return (source, jobId, destination, mode) =>
    authorizedMigrate({ agent: c.agent, metrics: c.metrics, log: c.log }, source, jobId, {
      destination,
      ...(mode ? { mode } : {}),
    });
}

/** What a migrate operation gets. */
export function migrateContext(c: OperationsHost): MigrateContext {
  return {
    ops: c.ops,
    log: c.log,
    migrate: migrateVia(c),
    whereIs: (jobId) => c.whereIs(jobId),
    migrations: async (host) => (await c.agent(host, 'migrations-list', {})).migrations,
  };
}

/** What a drain gets. */
export function drainContext(c: OperationsHost): DrainContext {
  const migrate = migrateVia(c);
  return {
    ops: c.ops,
    log: c.log,
    hosts: () => c.views(),
    cordon: (host) => c.cordon(host),
    jobsOn: async (host) => {
      const jobs = await jobsOfHost((r) => c.agent(host, 'list', r));
      return Promise.all(
        jobs.filter(isLive).map(async (j) => ({
          id: j.id,
          name: j.name,
          memoryBytes:
            (await c.agent(host, 'inspect', { jobId: j.id }).catch(() => null))?.memoryUsageBytes ??
            0,
        })),
      );
    },
    whereIs: (jobId) => c.whereIs(jobId),
    blockers: async (host, jobId) => {
      const r = await c.agent(host, 'preflight', { jobId });
      return r.reasons.map((x) => `${x.code}: ${x.message}`);
    },
    migrate: async (source, jobId, destination) => {
      const { record, error } = await migrate(source, jobId, destination);
      if (error) throw error;
      if (!record) {
        throw new DroverError(ErrorCode.Internal, `the migration of ${jobId} left no record`);
      }
      return { migrationId: record.migrationId, frozenMs: record.stats.frozenMs };
    },
  };
}

/**
 * Finish the operations a previous controller left running (called once acting): migrations
 * and drains are reconciled, checkpoints and restores resumed from their phase. Each runs on its
 * own; a failure is logged.
 */
export async function resumeOperations(c: OperationsHost): Promise<void> {
  const ops = [...(await c.ops.list()).values()].map((v) => v.value);
  for (const op of ops.filter((o) => o.state === 'running')) {
    const failed = (what: string) => (err: unknown) => c.log.error(what, { opId: op.opId, err });
    if (op.kind === 'migrate') {
      c.log.info('reconciling migration', { opId: op.opId, request: op.request });
      void reconcileMigrate(migrateContext(c), op.opId).catch(
        failed('reconciling a migration failed'),
      );
    } else if (op.kind === 'drain') {
      c.log.info('resuming drain', { opId: op.opId, host: op.host });
      void runDrain(drainContext(c), op.opId, Number(op.request['parallel'] ?? 2)).catch(
        failed('resumed drain failed'),
      );
    } else {
      c.log.info(`resuming ${op.kind}`, { opId: op.opId, set: op.imageSet, phase: op.phase });
      const run = op.kind === 'checkpoint' ? runCheckpoint : runRestore;
      void run(clusterContext(c), op.opId).catch(failed(`resumed ${op.kind} failed`));
    }
  }
}
