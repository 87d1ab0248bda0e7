/**
 * Freezing and thawing jobs on this host: one job, or several as one cut (a cluster checkpoint's
 * barrier). A frozen job with its own address has its network locked too: nothing reaches a
 * frozen member of a cut until every member is dumped.
 */
import { JobCgroup, type ScheduledFreeze } from '@drover/cgroup';
import { toDroverError } from '@drover/common';
import { JobState, type AgentReplies, type JobInfo } from '@drover/protocol';
import {
  addressOf,
  lockJobNetwork,
  lockJobNetworks,
  unlockJobNetwork,
  unlockJobNetworks,
} from './job-network.js';
import type { ImageStore } from './image-store.js';
import { toJobInfo, type JobRecord, type JobStore } from './job-store.js';

/** What freezing and thawing use of the agent. */
export interface FreezeHost {
  readonly store: JobStore;
  readonly images: Pick<ImageStore, 'startFinishing'>;
  cgroupOf(r: JobRecord): Promise<JobCgroup>;
  /** Publish a job's state as an event. */
  event(r: JobRecord): void;
}

/** Freeze job `jobId` and lock its network (the caller holds its lock). */
export async function freezeJob(host: FreezeHost, jobId: string): Promise<AgentReplies['freeze']> {
  const r = await host.store.loadLive(jobId);
  const cg = await host.cgroupOf(r);
  await cg.freeze();
  // A cluster's cut: nothing reaches a frozen member until every member is dumped.
  if (addressOf(r.network)) {
    await lockJobNetwork(r.id).catch(async (err: unknown) => {
      await cg.thaw().catch((e: unknown) => toDroverError(err).suppress(e));
      throw err;
    });
  }
  // When the kernel reported every task frozen: a cluster checkpoint's skew is measured on it.
  const frozenAtMs = performance.timeOrigin + performance.now();
  r.state = JobState.frozen;
  await host.store.save(r);
  host.event(r);
  return { ...toJobInfo(r), frozenAtMs };
}

/**
 * How late a scheduled cut may still be made (ms past its instant when the cut timer gets it):
 * later, the host refuses it (CUT_MISSED) and the controller plans a later one.
 */
export const CUT_LATE_MS = 2;

/**
 * Every job of `ids` frozen as one cut (`JobCgroup.freezeAll`: the freezes requested back to
 * back, then waited for together; with `at`, at that instant by the cut timer's thread), then
 * each one's network locked. All or nothing: a job that is not running refuses the call before
 * anything is frozen; if a freeze or a lock fails, every job is thawed and unlocked again; a cut
 * whose instant has passed freezes nothing (CUT_MISSED). The caller holds every job's lock.
 */
export async function freezeJobs(
  host: FreezeHost,
  ids: readonly string[],
  at?: ScheduledFreeze,
): Promise<AgentReplies['freeze-many']> {
  const records = await Promise.all(ids.map((id) => host.store.loadLive(id)));
  const cgs = await Promise.all(records.map((r) => host.cgroupOf(r)));
  // When the kernel reported each job frozen: a cluster checkpoint's skew is measured on it.
  let issuedAtMs: number | undefined;
  let requestedAt: readonly number[] = [];
  const frozenAt = await JobCgroup.freezeAll(
    cgs,
    at && {
      ...at,
      onIssued: (ms: number, each: readonly number[]) => {
        issuedAtMs = ms;
        requestedAt = each;
      },
    },
  );
  // A cluster's cut: nothing reaches a frozen member until every member is dumped. One `bridge`
  // run locks them all; if it fails, some may be locked: each is unlocked, every job thawed.
  const networked = records.filter((r) => addressOf(r.network));
  try {
    await lockJobNetworks(networked.map((r) => r.id));
  } catch (err) {
    const first = toDroverError(err);
    for (const r of networked) {
      await unlockJobNetwork(r.id).catch((e: unknown) => first.suppress(e));
    }
    for (const cg of cgs) await cg.thaw().catch((e: unknown) => first.suppress(e));
    throw first;
  }
  return {
    jobs: await Promise.all(
      records.map(async (r, i) => {
        r.state = JobState.frozen;
        await host.store.save(r);
        host.event(r);
        const requestedAtMs = requestedAt[i];
        return {
          ...toJobInfo(r),
          frozenAtMs: frozenAt[i]!,
          ...(requestedAtMs === undefined ? {} : { requestedAtMs }),
        };
      }),
    ),
    ...(issuedAtMs === undefined ? {} : { issuedAtMs }),
  };
}

/** Unlock job `jobId`'s network and thaw it (the caller holds its lock). */
export async function thawJob(host: FreezeHost, jobId: string): Promise<JobInfo> {
  const r = await host.store.loadLive(jobId);
  if (addressOf(r.network)) await unlockJobNetwork(r.id);
  await (await host.cgroupOf(r)).thaw();
  const info = await thawed(host, r);
  // Its images of a leave-running checkpoint taken while it was frozen are sealed now. (A cut's
  // thaw, `thawJobs`, leaves them to be moved into their set straight from tmpfs.)
  host.images.startFinishing(r.id);
  return info;
}

/**
 * Every job of `ids` thawed together, the end of a cluster's cut on this host: every record read,
 * every network unlocked, then every cgroup thawed at once (not one job's whole round after the
 * other's). Each job is tried; the first error is thrown once all were (a job that could not be
 * thawed stays frozen, and the caller thaws it again). The caller holds every job's lock.
 */
export async function thawJobs(
  host: FreezeHost,
  ids: readonly string[],
): Promise<AgentReplies['thaw-many']> {
  const records = await Promise.all(ids.map((id) => host.store.loadLive(id)));
  // Every network unlocked by one `bridge` run; if that fails, each job's alone below, so that
  // only a job whose network cannot be unlocked stays frozen.
  const networked = records.filter((r) => addressOf(r.network)).map((r) => r.id);
  const [cgs, batched] = await Promise.all([
    Promise.allSettled(records.map((r) => host.cgroupOf(r))),
    networked.length > 0
      ? unlockJobNetworks(networked).then(
          () => true,
          () => false,
        )
      : false,
  ]);
  const results = await Promise.allSettled(
    records.map(async (r, i) => {
      const cg = cgs[i]!;
      if (cg.status === 'rejected') throw cg.reason;
      if (!batched && addressOf(r.network)) await unlockJobNetwork(r.id);
      await cg.value.thaw();
    }),
  );
  // Every job of the host runs again from here: the end of its part of the cut.
  const thawedAtMs = performance.timeOrigin + performance.now();
  const failed = results.find((x): x is PromiseRejectedResult => x.status === 'rejected');
  const ok = records.filter((_, i) => results[i]!.status === 'fulfilled');
  const jobs = await Promise.all(ok.map((r) => thawed(host, r)));
  if (failed) throw toDroverError(failed.reason);
  return { jobs, thawedAtMs };
}

/** A thawed job's record and its event. */
async function thawed(host: FreezeHost, r: JobRecord): Promise<JobInfo> {
  r.state = JobState.running;
  await host.store.save(r);
  host.event(r);
  return toJobInfo(r);
}
