/**
 * The cluster's lists a page at a time (paging.ts in @drover/protocol): jobs gathered from the
 * agents, each of which pages its own; hosts from the registry; image sets. A page never holds
 * more than a reply can carry, so lists of any size are answered.
 */
import { toDroverError } from '@drover/common';
import {
  pageOf,
  type AgentReplies,
  type AgentRequest,
  type ClusterJob,
  type ControllerReplies,
  type ControllerRequest,
  type Page,
} from '@drover/protocol';

/** Jobs per page when the request does not say. */
export const DEFAULT_JOBS_PAGE = 1000;

/** Plain string order: the order of every cursor. */
export function byKey(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * What listing jobs needs: the hosts to ask, and a way to ask one; `silent`: the hosts not asked
 * because they are unreachable, each as `host (why)`: every page names them as unanswered.
 */
export interface JobsSource {
  hosts: readonly string[];
  silent?: readonly string[];
  list(host: string, req: AgentRequest<'list'>): Promise<AgentReplies['list']>;
}

/** What a page shows of the records it gathered: every record (the default), or one per job. */
export type JobsShape = (records: readonly ClusterJob[]) => ClusterJob[];

/**
 * One page of jobs across `src.hosts`, by id. Each agent is asked for its page after the cursor;
 * the page is the first `limit` jobs of their union (as `shape` shows them: all records of a job
 * stay on one page), and no further than the last id of any agent whose own page was cut (what
 * it did not send may sort before what others did).
 */
export async function jobsPage(
  src: JobsSource,
  req: Pick<ControllerRequest<'jobs'>, 'after' | 'limit'>,
  shape: JobsShape = (r) => [...r],
): Promise<ControllerReplies['jobs']> {
  const limit = req.limit ?? DEFAULT_JOBS_PAGE;
  const unanswered: string[] = [...(src.silent ?? [])];
  const pages = await Promise.all(
    src.hosts.map((host) =>
      src
        .list(host, { ...(req.after !== undefined ? { after: req.after } : {}), limit })
        .catch((err: unknown) => {
          unanswered.push(`${host} (${toDroverError(err).message})`);
          return { jobs: [] as ClusterJob[], next: null };
        }),
    ),
  );
  let bound: string | null = null;
  for (const p of pages) {
    if (p.next === undefined || p.next === null) continue;
    const last = p.jobs.at(-1)?.id;
    if (last !== undefined && (bound === null || byKey(last, bound) < 0)) bound = last;
  }
  const union = shape(
    pages.flatMap((p) => p.jobs).filter((j) => bound === null || byKey(j.id, bound) <= 0),
  ).sort((a, b) => byKey(a.id, b.id));
  const page = pageOfJobs(union, limit);
  // More may follow when this page or an agent's page was cut.
  const next = page.next ?? (bound !== null ? (page.items.at(-1)?.id ?? bound) : null);
  return {
    jobs: page.items,
    next,
    ...(unanswered.length ? { unanswered: unanswered.sort() } : {}),
  };
}

/** The first `limit` jobs of `sorted` (by id) that fit a reply, every record of each. */
function pageOfJobs(sorted: readonly ClusterJob[], limit: number): Page<ClusterJob> {
  const groups: ClusterJob[][] = [];
  for (const j of sorted) {
    const g = groups.at(-1);
    if (g && g[0]!.id === j.id) g.push(j);
    else groups.push([j]);
  }
  const p = pageOf(groups, (g) => g[0]!.id, { limit });
  return { items: p.items.flat(), next: p.next };
}

/** Every job of `src.hosts`, all pages. */
export async function allJobs(
  src: JobsSource,
  shape?: JobsShape,
): Promise<ControllerReplies['jobs']> {
  const jobs: ClusterJob[] = [];
  const unanswered = new Set<string>();
  let after: string | undefined;
  for (;;) {
    const p = await jobsPage(src, after === undefined ? {} : { after }, shape);
    jobs.push(...p.jobs);
    for (const u of p.unanswered ?? []) unanswered.add(u);
    if (p.next === null || p.next === undefined) break;
    after = p.next;
  }
  return { jobs, next: null, ...(unanswered.size ? { unanswered: [...unanswered].sort() } : {}) };
}

/** Every job on one host, all of its agent's pages. */
export async function jobsOfHost(
  list: (req: AgentRequest<'list'>) => Promise<AgentReplies['list']>,
): Promise<ClusterJob[]> {
  const out: ClusterJob[] = [];
  let after: string | undefined;
  for (;;) {
    const p = await list(after === undefined ? {} : { after });
    out.push(...p.jobs);
    if (p.next === null || p.next === undefined || p.jobs.length === 0) return out;
    after = p.next;
  }
}
