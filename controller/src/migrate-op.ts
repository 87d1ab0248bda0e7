/**
 * The migrate operation: recorded before anything moves, carried out through the source agent
 * (which finishes or rolls back a migration on its own), its outcome recorded after. A controller
 * that takes over an unfinished one reconciles it, as it does drains: it waits until the job is no
 * longer migrating, then records where the job is and the source's migration record — `done`
 * when it runs on the destination, `failed` (rolled back) when it runs where it was. The
 * operation is never left `running` once the agents can say where the job is.
 */
import type { StateStore } from '@drover/bus';
import { DroverError, ErrorCode, newSecret, toDroverError, type Logger } from '@drover/common';
import {
  errorToFailure,
  type MigrationMode,
  type MigrationRecord,
  type OperationRecord,
} from '@drover/protocol';
import type { ControllerMetrics } from './controller-metrics.js';
import type { AgentCall } from './host-access.js';

/** What a migrate operation needs from the controller. */
export interface MigrateContext {
  ops: Pick<StateStore<OperationRecord>, 'get' | 'put' | 'create' | 'mutate'>;
  log: Logger;
  /**
   * Authorize on the destination, then ask the source to migrate: its migration record (a failed
   * one's too, when the source kept one) and the error it failed with.
   */
  migrate(
    source: string,
    jobId: string,
    destination: string,
    mode?: MigrationMode,
  ): Promise<{ record: MigrationRecord | null; error: DroverError | null }>;
  /** Where the job is now and in what state (null: nowhere). Throws when agents cannot say. */
  whereIs(jobId: string): Promise<{ host: string; state: string } | null>;
  /** The migration records an agent keeps. */
  migrations(host: string): Promise<MigrationRecord[]>;
}

/** A migration may take long (post-copy of a big job pulls pages after the switch). */
const MIGRATE_TIMEOUT_MS = 15 * 60_000;

/**
 * Authorize the migration on the destination with a fresh ticket, then ask the source to
 * migrate with it: a destination takes only migrations the controller allowed (an agent
 * cannot push a job onto a peer by itself). A failed migration comes back with the source's
 * record of it when there is one (its phases, CRIU's error lines), found by the same ticket.
 */
export async function authorizedMigrate(
  deps: { agent: AgentCall; metrics: ControllerMetrics | null; log: Logger },
  source: string,
  jobId: string,
  to: { destination: string; mode?: MigrationMode },
): Promise<{ record: MigrationRecord | null; error: DroverError | null }> {
  const { destination, mode } = to;
  const ticket = newSecret();
  try {
    await deps.agent(destination, 'migrate-authorize', { jobId, source, ticket });
    const record = await deps.agent(
      source,
      'migrate',
      { jobId, destination, ticket, ...(mode ? { mode } : {}) },
      MIGRATE_TIMEOUT_MS,
    );
    deps.metrics?.migration('done', record, mode);
    return { record, error: null };
  } catch (err) {
    const error = toDroverError(err);
    const record = await deps
      .agent(source, 'migrate-find', { jobId, ticket }, 10_000)
      .catch(() => null);
    // Refused before anything was frozen (preflight, capacity, a mode the hosts lack).
    const refused = error.code === ErrorCode.FailedPrecondition && record === null;
    deps.metrics?.migration(refused ? 'refused' : 'failed', record, mode);
    deps.log.warn('migration failed', { jobId, source, destination, err: error });
    return { record, error };
  }
}

/** How often a reconciliation looks again while the job still migrates or agents do not answer. */
const RECONCILE_POLL_MS = 1000;

/** Record `op` (a new id: ALREADY_EXISTS otherwise), run the migration, record the outcome. */
export async function runMigrate(
  ctx: MigrateContext,
  op: OperationRecord,
): Promise<OperationRecord> {
  try {
    await ctx.ops.create(op.opId, op);
  } catch (err) {
    const e = toDroverError(err);
    if (e.code !== ErrorCode.AlreadyExists) throw e;
    throw new DroverError(ErrorCode.AlreadyExists, `operation ${op.opId} exists already`, {
      cause: err,
      details: { opId: op.opId },
    });
  }
  const r = op.request as { jobId: string; source: string; destination: string };
  const mode = op.request['mode'] as MigrationMode | undefined;
  const { record, error } = await ctx
    .migrate(r.source, r.jobId, r.destination, mode)
    .catch((err: unknown) => ({ record: null, error: toDroverError(err) }));
  // A failed migration's record too: its phases and CRIU's error lines.
  op.migration = record;
  op.state = error ? 'failed' : 'done';
  // In full: the cause chain and what went wrong while rolling back.
  if (error) op.error = errorToFailure(error);
  op.updatedAt = new Date().toISOString();
  await ctx.ops.put(op.opId, op);
  return op;
}

/** Carry a migrate operation a previous controller left running to its recorded outcome. */
export async function reconcileMigrate(
  ctx: MigrateContext,
  opId: string,
): Promise<OperationRecord> {
  const first = await ctx.ops.get(opId);
  if (!first) throw new DroverError(ErrorCode.NotFound, `no operation ${opId}`);
  const { jobId, source, destination } = first.value.request as {
    jobId: string;
    source: string;
    destination: string;
  };
  // The agents finish or roll back a migration on their own: wait until it is over.
  let where: { host: string; state: string } | null;
  for (;;) {
    const w = await ctx.whereIs(jobId).catch((err: unknown) => {
      ctx.log.warn('reconciling a migration: cannot tell where the job is yet', { opId, err });
      return undefined;
    });
    if (w !== undefined && w?.state !== 'migrating') {
      where = w;
      break;
    }
    await new Promise((r) => setTimeout(r, RECONCILE_POLL_MS));
  }
  const since = Date.parse(first.value.createdAt) - 5000;
  const record =
    (await ctx.migrations(source).catch(() => [] as MigrationRecord[]))
      .filter((m) => m.jobId === jobId && m.role === 'source' && Date.parse(m.startedAt) >= since)
      .sort((a, b) => b.startedAt.localeCompare(a.startedAt))[0] ?? null;
  const outcome: Pick<OperationRecord, 'state' | 'error' | 'migration'> =
    where !== null && where.host === destination
      ? { state: 'done', error: null, migration: record }
      : {
          state: 'failed',
          migration: record,
          error:
            where === null
              ? { code: ErrorCode.NotFound, message: `job ${jobId} is no longer running anywhere` }
              : {
                  code: record?.error?.code ?? 'ROLLED_BACK',
                  message:
                    (record === null
                      ? 'the migration never started (its controller stopped first)'
                      : `the migration rolled back${record.error ? `: ${record.error.message}` : ''}`) +
                    `; the job runs on ${where.host}`,
                },
        };
  const done = await ctx.ops.mutate(opId, (cur) =>
    cur && cur.state === 'running'
      ? { ...cur, ...outcome, updatedAt: new Date().toISOString() }
      : cur,
  );
  ctx.log.info('migration reconciled', { opId, jobId, state: done?.value.state });
  return done!.value;
}
