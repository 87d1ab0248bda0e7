/**
 * Tests of the jobs listing across agents a page at a time: every job exactly once and in order,
 * whatever the page size, also when an agent cuts its own page short (a host with more jobs than
 * one reply carries), and the hosts that did not answer named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError, ErrorCode } from '@drover/common';
import { pageOf, type AgentReplies, type AgentRequest, type ClusterJob } from '@drover/protocol';
import { allJobs, byKey, jobsPage, type JobsSource } from './listing.js';

function job(id: string, host: string): ClusterJob {
  return { id, host, name: id, state: 'running' } as unknown as ClusterJob;
}

/** Agents holding `perHost` jobs each; an agent's own page is cut at `cut` jobs (its byte budget). */
function fleet(
  hosts: number,
  perHost: number,
  cut: number,
  seed = 7,
): JobsSource & { all: string[] } {
  let x = seed;
  const rand = (): number => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const byHost = new Map<string, ClusterJob[]>();
  const all: string[] = [];
  for (let h = 0; h < hosts; h++) {
    const host = `h${h}`;
    const jobs = Array.from({ length: perHost }, () => {
      const id = `job-${Math.floor(rand() * 1e9).toString(36)}-${h}`;
      all.push(id);
      return job(id, host);
    }).sort((a, b) => byKey(a.id, b.id));
    byHost.set(host, jobs);
  }
  return {
    all: all.sort(byKey),
    hosts: [...byHost.keys()],
    list: async (host: string, r: AgentRequest<'list'>): Promise<AgentReplies['list']> => {
      const p = pageOf(byHost.get(host)!, (j) => j.id, {
        after: r.after,
        limit: Math.min(r.limit ?? Infinity, cut),
      });
      return { jobs: p.items, next: p.next };
    },
  };
}

test('pages of every size list every job once, in id order', async () => {
  for (const [limit, cut] of [
    [7, 1000],
    [50, 1000],
    [1000, 1000],
    [50, 3], // agents cut their own pages far below the asked limit
    [1, 1],
  ] as const) {
    const src = fleet(6, 40, cut);
    const seen: string[] = [];
    let after: string | undefined;
    for (let n = 0; n < 10_000; n++) {
      const p = await jobsPage(src, { limit, ...(after !== undefined ? { after } : {}) });
      assert.ok(p.jobs.length <= limit);
      seen.push(...p.jobs.map((j) => j.id));
      if (p.next === null || p.next === undefined) break;
      after = p.next;
    }
    assert.deepEqual(seen, src.all, `limit ${limit}, agents cut at ${cut}`);
  }
});

test('allJobs gathers every page; an agent that does not answer is named, not hidden', async () => {
  const src = fleet(3, 30, 4);
  const down: JobsSource = {
    hosts: [...src.hosts, 'h9'],
    list: (host, r) =>
      host === 'h9'
        ? Promise.reject(new DroverError(ErrorCode.Timeout, 'no reply on drover.agent.h9.list'))
        : src.list(host, r),
  };
  const r = await allJobs(down);
  assert.deepEqual(
    r.jobs.map((j) => j.id),
    src.all,
  );
  assert.deepEqual(r.unanswered, ['h9 (no reply on drover.agent.h9.list)']);
  assert.equal(r.next, null);
});

test('hosts not asked (unreachable) are named on every page, with those that did not answer', async () => {
  const src = fleet(2, 5, 1000);
  const r = await jobsPage(
    {
      ...src,
      silent: ['h7 (unreachable: no heartbeat for 40s)'],
      list: (host, req) =>
        host === 'h1'
          ? Promise.reject(new Error('no reply on drover.agent.h1.list'))
          : src.list(host, req),
    },
    { limit: 2 },
  );
  assert.equal(r.jobs.length, 2);
  assert.deepEqual(r.unanswered, [
    'h1 (no reply on drover.agent.h1.list)',
    'h7 (unreachable: no heartbeat for 40s)',
  ]);
  const all = await allJobs({ ...src, silent: ['h7 (unreachable)'] });
  assert.equal(all.jobs.length, 10);
  assert.deepEqual(all.unanswered, ['h7 (unreachable)']);
});
