/**
 * Whether and how a job leaves this host: the checks before a migration starts (the job, the
 * destination, preflight), the mode it runs in, and what the destination is told of the job.
 */
import { DroverError, ErrorCode } from '@drover/common';
import {
  JobState,
  type AgentRequest,
  type MigrationMode,
  type MigrationRecord,
} from '@drover/protocol';
import type { Agent } from '../agent.js';
import type { JobRecord } from '../job-store.js';
import { preflight, preflightInputOf, type DestinationFacts } from '../preflight.js';
import type { MigrationContext } from './context.js';
import { SourceMigration } from './source.js';
import { realSourceWorld } from './source-world.js';

/** Jobs above this size go post-copy under `auto` when both hosts can. */
const AUTO_POSTCOPY_BYTES = 512 * 1024 * 1024;

/** Migrate a job off this host. Caller holds no lock; this takes the job's. */
export function migrateJob(
  agent: Agent,
  ctx: MigrationContext,
  req: AgentRequest<'migrate'>,
): Promise<MigrationRecord> {
  return agent.withJob(req.jobId, async () => {
    const job = await agent.liveJob(req.jobId);
    const cg = await agent.cgroupOf(job);
    const memoryBytes = (await cg.memoryUsage().catch(() => 0)) || 0;
    const destInfo = await ctx.call(req.destination, 'info', {}, 5000);
    const mode = chooseMode(req.mode ?? 'auto', agent, destInfo.criu, memoryBytes);
    checkMovable(job, req.destination, agent.config.hostId);
    if (req.force !== true) {
      const report = await preflight(
        await preflightInputOf(job),
        destinationFacts(job, req.destination, destInfo.cpuFlags, ctx.call),
      );
      if (!report.ok) {
        throw new DroverError(
          ErrorCode.FailedPrecondition,
          `job ${job.id} cannot move to ${req.destination}: ${report.reasons.map((r) => r.message).join('; ')}`,
          { details: { jobId: job.id, reasons: report.reasons } },
        );
      }
    }
    return new SourceMigration(realSourceWorld(agent, ctx), job, req, {
      mode,
      memoryBytes,
      destinationAddress: destInfo.stream.host,
    }).run();
  });
}

/** Refuse a job that is not running here or a move to where it is. */
function checkMovable(job: JobRecord, destination: string, here: string): void {
  if (job.state !== JobState.running) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `job ${job.id} is ${job.state}; only running jobs migrate`,
      { details: { jobId: job.id, state: job.state } },
    );
  }
  if (destination === here)
    throw new DroverError(ErrorCode.InvalidArgument, `job ${job.id} is already on ${destination}`);
}

function chooseMode(
  asked: MigrationMode,
  agent: Agent,
  dest: { lazyPages: boolean; memTrack: boolean },
  memoryBytes: number,
): Exclude<MigrationMode, 'auto'> {
  if (asked === 'pre-copy' && !(agent.features.memTrack && dest.memTrack)) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      'pre-copy needs memory tracking (soft-dirty) on both hosts, and this kernel has none (CONFIG_MEM_SOFT_DIRTY is off); use stop-copy or post-copy',
      {
        details: {
          feature: 'mem_track',
          source: agent.features.memTrack,
          destination: dest.memTrack,
        },
      },
    );
  }
  if (asked === 'pre-copy') {
    // Where the kernel tracks memory, pre-copy iterations are not implemented yet either.
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      'pre-copy is not available in this version; use stop-copy or post-copy',
      { details: { mode: asked } },
    );
  }
  const lazy = agent.features.lazyPages && dest.lazyPages;
  if (asked === 'post-copy') {
    if (!lazy) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        'post-copy needs CRIU lazy pages (userfaultfd) on both hosts',
        { details: { source: agent.features.lazyPages, destination: dest.lazyPages } },
      );
    }
    return 'post-copy';
  }
  if (asked === 'auto')
    return lazy && memoryBytes > AUTO_POSTCOPY_BYTES ? 'post-copy' : 'stop-copy';
  return 'stop-copy';
}

/**
 * What preflight needs to know about a destination. The job's own directory is left out of the
 * file check: the destination creates it and its files travel with the images.
 */
export function destinationFacts(
  job: Pick<JobRecord, 'jobDir'>,
  host: string,
  cpuFlags: readonly string[],
  call: MigrationContext['call'],
): DestinationFacts {
  const own = `${job.jobDir}/`;
  return {
    host,
    cpuFlags,
    checkFiles: (files) =>
      call(host, 'files-check', {
        files: files.filter((f) => !f.path.startsWith(own)),
        space: true,
      }),
  };
}
