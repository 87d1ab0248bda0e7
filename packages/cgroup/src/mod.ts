/**
 * @drover/cgroup: job cgroups and the freezer on v1, v2 and hybrid hosts, with the checkpointing
 * guard that keeps a job frozen while a checkpoint is taken.
 *
 * @example
 * ```ts
 * const cg = await JobCgroup.create({ jobId, stateDir, memoryLimitBytes: 512 << 20 });
 * await cg.addProcess(pid);
 * const guard = await cg.freezeForCheckpoint();   // thaw() now fails with CHECKPOINTING
 * try { await dump(cg.paths.freezer); } finally { await guard.release({ thaw: true }); }
 * ```
 */
export { detectCgroupLayout, CgroupMode, CgroupVersion } from './hierarchy.js';
export type { CgroupLayout } from './hierarchy.js';
export { JobCgroup } from './job-cgroup.js';
export type { JobCgroupOptions, CreateJobCgroupOptions, DestroyOptions } from './job-cgroup.js';
export { DEFAULT_PARENT, validateJobId } from './job-paths.js';
export type { JobCgroupPaths } from './job-paths.js';
export { FreezerState } from './freezer.js';
export type { ScheduledFreeze } from './freezer.js';
export { prepareCutTimer } from './cut-timer.js';
export type { CutTimerOptions } from './cut-timer.js';
export { CheckpointGuard, CHECKPOINT_MARKER } from './checkpoint-guard.js';
export type { GuardHolder } from './checkpoint-guard.js';
export { CgroupError, CheckpointingError, CutMissedError } from './errors.js';
