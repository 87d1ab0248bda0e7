/**
 * Where a job is, asked of the agents themselves (heartbeats may be a moment old: a job that just
 * migrated still shows on its old host). "Not found" only when every reachable agent said so: an
 * agent that did not answer may have the job, and then the answer is UNAVAILABLE, naming it.
 */
import { DroverError, ErrorCode, toDroverError } from '@drover/common';
import type { JobInfo } from '@drover/protocol';
import { isLive, latestRecord } from './job-records.js';
import type { HostView } from './placement.js';

/** What locating needs: the hosts as the controller sees them, and an agent's `inspect`. */
export interface Locator {
  hosts(): HostView[];
  inspect(host: string, jobId: string): Promise<JobInfo>;
}

function cannotTell(jobId: string, unanswered: string[]): DroverError {
  return new DroverError(
    ErrorCode.Unavailable,
    `cannot tell where job ${jobId} runs: the agents on ${unanswered.join(', ')} did not answer`,
    { retryable: true, details: { jobId, unanswered } },
  );
}

/** Ask `host` for the job: the job, null when the agent says it has none, or `unanswered`. */
async function ask(
  l: Locator,
  host: string,
  jobId: string,
  unanswered: string[],
): Promise<JobInfo | null> {
  return l.inspect(host, jobId).catch((err: unknown) => {
    if (toDroverError(err).code !== ErrorCode.NotFound) unanswered.push(host);
    return null;
  });
}

/** Where the job's processes are now and in what state (null: on no reachable host). */
export async function whereIs(
  l: Locator,
  jobId: string,
): Promise<{ host: string; state: string } | null> {
  const unanswered: string[] = [];
  for (const h of l.hosts().filter((x) => x.reachable)) {
    const j = await ask(l, h.host, jobId, unanswered);
    if (j && isLive(j)) return { host: h.host, state: j.state };
  }
  if (unanswered.length > 0) throw cannotTell(jobId, unanswered);
  return null;
}

/**
 * The host the job lives on (with `anyState`, also one that only keeps its record). Hosts whose
 * heartbeat lists the job are asked first, then every other reachable host.
 */
export async function locate(l: Locator, jobId: string, anyState = false): Promise<string> {
  const all = l.hosts();
  const reachable = all.filter((h) => h.reachable);
  const listed = reachable.filter((h) => h.info.jobs.some((j) => j.id === jobId));
  const order = [...listed, ...reachable.filter((h) => !listed.includes(h))];
  const ended: JobInfo[] = [];
  const unanswered: string[] = [];
  for (const h of order) {
    const found = await ask(l, h.host, jobId, unanswered);
    if (!found) continue;
    if (isLive(found)) return h.host;
    ended.push({ ...found, host: h.host });
  }
  // Ended: where it ended (its last hop), not a host it moved away from.
  const last = latestRecord(ended);
  if (anyState && last !== null) return last.host;
  if (unanswered.length > 0) throw cannotTell(jobId, unanswered);
  if (last !== null) {
    // It exists but does not run: refused by its state, as its agent would refuse it.
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `job ${jobId} is not running (it is ${last.state} on ${last.host})`,
      { details: { jobId, state: last.state, host: last.host } },
    );
  }
  const down = all.filter((h) => !h.reachable).map((h) => h.host);
  throw new DroverError(
    ErrorCode.NotFound,
    `no running job ${jobId} on any reachable host` +
      (down.length ? ` (unreachable: ${down.join(', ')})` : ''),
    { details: { jobId, ...(down.length ? { unreachable: down } : {}) } },
  );
}
