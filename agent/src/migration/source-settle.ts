/**
 * How a source migration settles with the world after the phases: the original's network
 * released (the move succeeded) or reopened (it failed), and, when the stream broke after DONE,
 * the destination asked over NATS what became of the job. Used by `source.ts` and by recovery.
 */
import { DroverError, ErrorCode } from '@drover/common';
import { MigrationState, type MigrationRecord } from '@drover/protocol';
import { addressOf, detachJob, unlockJobNetwork, unquiesceJob } from '../job-network.js';
import type { JobRecord } from '../job-store.js';
import type { MigrationContext } from './context.js';

/**
 * The destination runs the job: the original's link goes before the original does, so nothing
 * its dying sockets send (FINs, resets) reaches the segment where the job's address now lives.
 */
export async function releaseOriginalNetwork(job: JobRecord): Promise<void> {
  if (!addressOf(job.network)) return;
  await detachJob(job.id);
  await unquiesceJob(job.id);
}

/** The move failed: the original's link carries traffic again, new connections included. */
export async function reopenOriginalNetwork(job: JobRecord): Promise<void> {
  if (!addressOf(job.network)) return;
  await unlockJobNetwork(job.id);
  await unquiesceJob(job.id);
}

/** Ask the destination (over NATS, not the broken stream) what became of the migration. */
export async function settleWithDestination(
  call: MigrationContext['call'],
  rec: MigrationRecord,
  ticket: string,
  attempts = 10,
): Promise<'running' | 'aborted' | 'unknown'> {
  for (let i = 0; i < attempts; i++) {
    try {
      const st = await call(
        rec.destination,
        'migrate-status',
        { migrationId: rec.migrationId, ticket },
        2000,
      );
      if (st.state === MigrationState.running || st.state === MigrationState.done) return 'running';
      if (st.state === MigrationState.restoring || st.state === MigrationState.receiving) {
        await sleep(500); // still at work: let it finish or fail
        continue;
      }
      await call(rec.destination, 'migrate-abort', { migrationId: rec.migrationId, ticket }, 5000);
      return 'aborted';
    } catch (err) {
      if (err instanceof DroverError && err.code === ErrorCode.NotFound) return 'aborted';
      await sleep(500);
    }
  }
  return 'unknown';
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
