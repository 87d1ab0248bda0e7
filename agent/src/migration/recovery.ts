/**
 * After an agent restart: every unfinished migration is finished or rolled back, never
 * forgotten. The source decides by asking the destination; the destination cleans up anything
 * that never started running.
 */
import { errorToFailure, JobState, MigrationState, type MigrationRecord } from '@drover/protocol';
import { DroverError, ErrorCode } from '@drover/common';
import type { Agent } from '../agent.js';
import { isSameLiveProcess } from '@drover/native';
import type { MigrationContext } from './context.js';
import { advance, FINAL_STATES, MigrationStore } from './migration-store.js';
import { criuWorkingIn, removeScratch } from './scratch.js';
import { isReceiving } from './destination.js';
import { activeSourceMigrations } from './source.js';
import {
  releaseOriginalNetwork,
  reopenOriginalNetwork,
  settleWithDestination,
} from './source-settle.js';

/** Source states in which the destination cannot have restored anything yet. */
const BEFORE_DONE: readonly MigrationState[] = [
  'preparing',
  'prepared',
  'frozen',
  'dumping',
  'transferring',
];

/** Resolve every unfinished migration of this host. Returns the ones still in doubt. */
export async function recoverMigrations(
  agent: Agent,
  ctx: MigrationContext,
): Promise<MigrationRecord[]> {
  const store = new MigrationStore(agent.config.stateDir);
  const doubt: MigrationRecord[] = [];
  for (const listed of await store.list()) {
    if (FINAL_STATES.includes(listed.state)) continue;
    // In flight in this very process: not ours to recover.
    if (activeSourceMigrations.has(listed.migrationId) || isReceiving(listed.migrationId)) continue;
    const rec = listed;
    try {
      if (rec.role === 'source') {
        if (!(await recoverSource(agent, ctx, store, rec))) doubt.push(rec);
      } else {
        await recoverDestination(agent, store, rec);
      }
    } catch (err) {
      agent.log.error('migration recovery failed', { migrationId: rec.migrationId, err });
      doubt.push(rec);
    }
  }
  return doubt;
}

async function recoverSource(
  agent: Agent,
  ctx: MigrationContext,
  store: MigrationStore,
  rec: MigrationRecord,
): Promise<boolean> {
  return agent.withJob(rec.jobId, async () => {
    // Re-read under the lock: the record may have moved on since it was listed.
    const fresh = await store.load(rec.migrationId, 'source');
    if (FINAL_STATES.includes(fresh.state)) return true;
    Object.assign(rec, fresh);
    // A dump the dead agent started may still be running (it outlives its agent): the job is
    // not touched until it has ended, or CRIU would find it thawed under its parasite. Asked
    // again on the next round (every 5 s).
    const busy = await criuWorkingIn(agent.config.hostId, rec.migrationId, agent.config.stateDir);
    if (busy.length) {
      agent.log.info('a dump of this migration is still running; recovering later', {
        migrationId: rec.migrationId,
        criu: busy,
      });
      return false;
    }
    // A record of an older agent has no ticket: before DONE nothing ran there (abort is only
    // courtesy); after it, the destination cannot be asked and the record stays in doubt.
    const ticket = await store.ticket(rec.migrationId).catch(() => null);
    let outcome: 'running' | 'aborted' | 'unknown';
    if (BEFORE_DONE.includes(rec.state)) {
      if (ticket !== null) {
        await ctx
          .call(rec.destination, 'migrate-abort', { migrationId: rec.migrationId, ticket }, 5000)
          .catch(() => undefined);
      }
      outcome = 'aborted';
    } else {
      outcome = ticket === null ? 'unknown' : await settleWithDestination(ctx.call, rec, ticket, 4);
    }
    const job = await agent.store.load(rec.jobId);
    const cg = await agent.cgroupOf(job).catch(() => null);
    if (outcome === 'unknown') {
      advance(rec, MigrationState.inDoubt, 0);
      rec.note = 'after a restart the destination could not be asked; the original stays frozen';
      await store.save(rec);
      return false;
    }
    if (outcome === 'running') {
      agent.supervisor.release(job.id);
      await releaseOriginalNetwork(job);
      await cg?.forceClearGuard();
      await cg?.destroy({ force: true });
      job.state = JobState.migrated;
      job.note = `moved to ${rec.destination} by ${rec.migrationId} (finished after an agent restart)`;
      job.rootPid = null;
      job.mainPid = null;
      await agent.store.save(job);
      await ctx
        .call(
          rec.destination,
          'migrate-commit',
          { migrationId: rec.migrationId, ticket: ticket! },
          5000,
        )
        .catch(() => undefined);
      advance(rec, MigrationState.done, 0);
    } else {
      await reopenOriginalNetwork(job).catch((err: unknown) =>
        agent.log.warn('cannot reopen the network of a job whose move was abandoned', {
          jobId: job.id,
          err,
        }),
      );
      await cg?.forceClearGuard();
      await cg?.thaw().catch(() => undefined);
      const alive = job.rootPid !== null && isSameLiveProcess(job.rootPid, job.rootStartTicks);
      job.state = alive ? JobState.running : JobState.lost;
      job.note = alive ? null : `lost while migration ${rec.migrationId} was interrupted`;
      await agent.store.save(job);
      rec.error ??= errorToFailure(
        new DroverError(ErrorCode.Unavailable, 'the source agent restarted during the migration'),
      );
      advance(rec, MigrationState.rolledBack, 0);
    }
    agent.event(job);
    await store.save(rec);
    await removeScratch(agent.config.hostId, rec.migrationId, agent.config.stateDir);
    agent.log.info('recovered migration', { migrationId: rec.migrationId, outcome });
    return true;
  });
}

async function recoverDestination(
  agent: Agent,
  store: MigrationStore,
  rec: MigrationRecord,
): Promise<void> {
  await agent.withJob(rec.jobId, async () => {
    const fresh = await store.load(rec.migrationId, 'destination');
    if (FINAL_STATES.includes(fresh.state) || isReceiving(rec.migrationId)) return;
    Object.assign(rec, fresh);
    const job = await agent.store.load(rec.jobId).catch(() => null);
    const ours = job !== null && job.restoredFrom === rec.migrationId;
    if (
      ours &&
      job.state === JobState.running &&
      job.rootPid !== null &&
      isSameLiveProcess(job.rootPid, job.rootStartTicks)
    ) {
      // The restore finished before the restart: the job runs here; the source will commit.
      advance(rec, MigrationState.running, 0);
    } else {
      if (ours) {
        const cg = await agent.cgroupOf(job).catch(() => null);
        await cg?.destroy({ force: true });
        await agent.store.remove(rec.jobId);
      }
      rec.note = 'the destination agent restarted before the job ran here';
      advance(rec, MigrationState.aborted, 0);
      await removeScratch(agent.config.hostId, rec.migrationId, agent.config.stateDir);
    }
    await store.save(rec);
  });
}
