/**
 * The cluster's jobs from the agents' records. A job that moved leaves a record on every host it
 * passed through (`migrated` there); a job that ended keeps its last record. `jobs` shows each
 * job once, where it lives now; `--all` shows every record; `jobs rm`/`prune` remove the
 * records of ended jobs from every host. The controller brings the records and a host's `remove`.
 */
import { DroverError, ErrorCode, type Logger } from '@drover/common';
import type { JobInfo, RemovedJob } from '@drover/protocol';

/** What removing records needs from the controller. */
export interface RecordsAccess {
  /** Every record of every reachable host. */
  records(): Promise<JobInfo[]>;
  /** Remove a job's record from `host` (its agent refuses a live job). */
  remove(host: string, jobId: string): Promise<unknown>;
  log: Logger;
}

/** `jobs rm`: every record of each of `ids`; nothing is removed when one is unknown or lives. */
export async function removeJobs(a: RecordsAccess, ids: readonly string[]): Promise<RemovedJob[]> {
  const doomed = recordsToRemove(await a.records(), ids);
  for (const r of doomed) await a.remove(r.host, r.id);
  return doomed.map(removedOf);
}

/** `jobs prune`: every record of every ended job. */
export async function pruneJobs(a: RecordsAccess): Promise<RemovedJob[]> {
  const removed: RemovedJob[] = [];
  for (const r of [...endedJobs(await a.records()).values()].flat()) {
    // One that started again meanwhile (a restore) is refused by its agent: it stays.
    const ok = await a.remove(r.host, r.id).then(
      () => true,
      (err: unknown) => (a.log.warn('cannot prune a job', { jobId: r.id, err }), false),
    );
    if (ok) removed.push(removedOf(r));
  }
  return removed;
}

/** States in which a job's processes exist on a host, most telling first (mid-migration, the
 * copy that runs wins over the one being moved). */
const LIVE_ORDER = ['running', 'frozen', 'checkpointing', 'migrating', 'starting'] as const;
const LIVE = new Set<string>(LIVE_ORDER);

/** True when a record's job has processes on its host. */
export function isLive(j: Pick<JobInfo, 'state'>): boolean {
  return LIVE.has(j.state);
}

/** Each live job once, on the host it lives on now, by id. */
export function currentJobs(records: readonly JobInfo[]): JobInfo[] {
  const best = new Map<string, JobInfo>();
  for (const r of records) {
    if (!isLive(r)) continue;
    const cur = best.get(r.id);
    if (!cur || rank(r) < rank(cur)) best.set(r.id, r);
  }
  return [...best.values()].sort((a, b) => a.id.localeCompare(b.id));
}

/** Every record: by job, then the order the job passed through hosts. */
export function allRecords(records: readonly JobInfo[]): JobInfo[] {
  return [...records].sort((a, b) => a.id.localeCompare(b.id) || order(a) - order(b));
}

/** The records of jobs that live nowhere any more, by job id. */
export function endedJobs(records: readonly JobInfo[]): Map<string, JobInfo[]> {
  const byId = new Map<string, JobInfo[]>();
  for (const r of records) byId.set(r.id, [...(byId.get(r.id) ?? []), r]);
  for (const [id, list] of byId) if (list.some(isLive)) byId.delete(id);
  return byId;
}

/**
 * The records `jobs rm` removes for `ids`: every record of each, on every host. Refuses the
 * whole request (nothing removed) when one is unknown or still lives.
 */
export function recordsToRemove(records: readonly JobInfo[], ids: readonly string[]): JobInfo[] {
  const out: JobInfo[] = [];
  for (const id of ids) {
    const mine = records.filter((r) => r.id === id);
    if (mine.length === 0)
      throw new DroverError(ErrorCode.NotFound, `no job ${id} on any reachable host`, {
        details: { jobId: id },
      });
    const live = mine.find(isLive);
    if (live) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `job ${id} is ${live.state} on ${live.host}; stop it first (drover stop ${id})`,
        { details: { jobId: id, host: live.host, state: live.state } },
      );
    }
    out.push(...mine);
  }
  return out;
}

/** A removed record, as `jobs rm` reports it. */
export function removedOf(r: JobInfo): RemovedJob {
  return { jobId: r.id, name: r.name, host: r.host, state: r.state };
}

/**
 * The record that tells where a job is or ended: a live one, else its last hop (a record not
 * `migrated` away), else the newest.
 */
export function latestRecord(records: readonly JobInfo[]): JobInfo | null {
  const live = currentJobs(records)[0];
  if (live) return live;
  const sorted = allRecords(records);
  return sorted.filter((r) => r.state !== 'migrated').at(-1) ?? sorted.at(-1) ?? null;
}

function rank(r: JobInfo): number {
  return (LIVE_ORDER as readonly string[]).indexOf(r.state);
}

/** When a record's incarnation started (a restore or migration starts a new one). */
function order(r: JobInfo): number {
  const t = Date.parse(r.exitedAt ?? '') || Date.parse(r.startedAt) || 0;
  // A hop the job left comes before where it went: `migrated` records end when the next starts.
  return r.state === 'migrated' ? t - 1 : t;
}
