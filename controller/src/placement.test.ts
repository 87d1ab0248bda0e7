/** Tests of placement: who fits, who wins and why, refusals with reasons, and batch planning. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { DroverError, ErrorCode, isDroverError } from '@drover/common';
import type { AgentInfo, JobState } from '@drover/protocol';
import {
  place,
  planMany,
  type HostView,
  type PlacementRequest,
  type Verdict,
} from './placement.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const BASE_FLAGS = ['fpu', 'sse2', 'avx2'];

interface HostSpec {
  availGiB?: number;
  jobs?: number;
  jobState?: JobState;
  flags?: string[];
  lazy?: boolean;
  cordoned?: boolean;
  reachable?: boolean;
  lastSeenMs?: number;
}

function host(name: string, o: HostSpec = {}): HostView {
  const info: AgentInfo = {
    host: name,
    version: '0.1.0',
    time: '2025-01-01T00:00:00.000Z',
    uptimeSec: 1,
    kernel: '6.8.0',
    cpus: 4,
    cpuFlags: o.flags ?? BASE_FLAGS,
    memory: { totalBytes: 64 * GiB, availableBytes: (o.availGiB ?? 8) * GiB },
    criu: { version: '4.0', lazyPages: o.lazy ?? true, memTrack: true },
    stream: { host: '10.0.0.1', port: 7070 },
    jobs: Array.from({ length: o.jobs ?? 0 }, (_, i) => ({
      id: `${name}-j${i}`,
      state: o.jobState ?? 'running',
      name: `j${i}`,
    })),
  };
  return {
    host: name,
    info,
    cordoned: o.cordoned ?? false,
    reachable: o.reachable ?? true,
    lastSeenMs: o.lastSeenMs ?? 1_000_000,
  };
}

const req = (memGiB: number, extra: Partial<PlacementRequest> = {}): PlacementRequest => ({
  memoryBytes: memGiB * GiB,
  cpuFlags: ['sse2'],
  ...extra,
});

/** The error `fn` throws, asserted to be a DroverError. */
function refusal(fn: () => unknown): DroverError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof DroverError, `expected a DroverError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a refusal');
}

const verdictsOf = (err: DroverError): Verdict[] => err.details['verdicts'] as Verdict[];

test('the host with the most free memory after placement wins, and the explanation says why', () => {
  const hosts = [
    host('h1', { availGiB: 4 }),
    host('h2', { availGiB: 16 }),
    host('h3', { availGiB: 8 }),
  ];
  const p = place(hosts, req(2));
  assert.equal(p.host, 'h2');
  assert.match(
    p.explanation,
    /^h2: 14\.0 GiB free after, 0 jobs; h3 had 6\.0 GiB free after, 0 jobs$/,
  );
  assert.deepEqual(
    p.verdicts.map((v) => [v.host, v.fits]),
    [
      ['h1', true],
      ['h2', true],
      ['h3', true],
    ],
  );
});

test('fewer jobs win at equal memory; only jobs that occupy the host count', () => {
  const busy = [host('a', { jobs: 3 }), host('b', { jobs: 1 })];
  assert.equal(place(busy, req(1)).host, 'b');
  // a's jobs have exited: they hold nothing, so a (0 occupying jobs) beats b (1).
  const exited = [host('a', { jobs: 3, jobState: 'exited' }), host('b', { jobs: 1 })];
  assert.equal(place(exited, req(1)).host, 'a');
  // Much more memory outweighs one more job: free memory per job decides.
  const mixed = [host('a', { availGiB: 32, jobs: 1 }), host('b', { availGiB: 8, jobs: 0 })];
  assert.equal(place(mixed, req(1)).host, 'a');
});

test('ties go to the smaller host name whatever the input order', () => {
  assert.equal(place([host('zeta'), host('alpha'), host('mid')], req(1)).host, 'alpha');
  const m = planMany([host('zeta'), host('alpha')], [{ jobId: 'j', req: req(1) }]).get('j');
  assert.ok(m !== undefined && !(m instanceof DroverError));
  assert.equal(m.host, 'alpha');
});

test('each unfit host is refused with its reason, all listed in the error', () => {
  const hosts = [
    host('cordoned', { availGiB: 64, cordoned: true }),
    host('gone', { availGiB: 64, reachable: false, lastSeenMs: 1_000_000 }),
    host('old-cpu', { availGiB: 64, flags: ['fpu', 'sse2'] }),
    host('no-lazy', { availGiB: 64, lazy: false }),
    host('current', { availGiB: 64 }),
    host('small', { availGiB: 1 }),
  ];
  const request = req(2, {
    cpuFlags: ['sse2', 'avx2', 'avx512f'],
    needsLazyPages: true,
    exclude: ['current'],
    nowMs: 1_012_000,
  });
  // Give every host but old-cpu the flags, so each host has exactly its own reason.
  for (const h of hosts) if (h.host !== 'old-cpu') h.info.cpuFlags.push('avx512f');
  const err = refusal(() => place(hosts, request));
  assert.equal(err.code, ErrorCode.FailedPrecondition);
  const reasons = Object.fromEntries(verdictsOf(err).map((v) => [v.host, v.reasons]));
  assert.deepEqual(reasons, {
    cordoned: ['cordoned'],
    current: ['excluded'],
    gone: ['unreachable (no heartbeat for 12 s)'],
    'no-lazy': ['no lazy pages (post-copy)'],
    'old-cpu': ['lacks CPU flags avx2 avx512f'],
    small: ['needs 2.0 GiB, 1.0 GiB free'],
  });
  for (const text of Object.values(reasons).flat()) assert.ok(err.message.includes(text), text);
  assert.ok(verdictsOf(err).every((v) => !v.fits && v.score === 0));
});

test('planned memory and the reserve count against free memory, and the reason shows them', () => {
  const hosts = [host('h1', { availGiB: 4 })];
  assert.equal(place(hosts, req(2)).host, 'h1');
  const err = refusal(() =>
    place(hosts, req(2, { plannedMemoryBytes: { h1: 1 * GiB }, reserveMemoryBytes: 1.5 * GiB })),
  );
  assert.match(
    err.message,
    /h1: needs 2\.0 GiB, 1\.5 GiB free \(4\.0 GiB available, 1\.0 GiB planned, 1\.5 GiB reserved\)/,
  );
  // Planned jobs count like heartbeat jobs.
  const two = [host('a'), host('b')];
  assert.equal(place(two, req(1, { plannedJobs: { a: 2 } })).host, 'b');
});

test('no hosts at all is refused clearly; malformed requests are INVALID_ARGUMENT', () => {
  assert.match(refusal(() => place([], req(1))).message, /no host fits .*no hosts are known/);
  const bad = refusal(() => place([host('h1')], { memoryBytes: -1, cpuFlags: [] }));
  assert.equal(bad.code, ErrorCode.InvalidArgument);
  assert.equal(
    refusal(() => place([host('h1'), host('h1')], req(1))).code,
    ErrorCode.InvalidArgument,
  );
});

test('candidates: the first that fits wins, others are never chosen, unknown ones are reported', () => {
  const hosts = [
    host('h1', { availGiB: 64 }),
    host('h2', { availGiB: 4 }),
    host('h3', { availGiB: 8, cordoned: true }),
  ];
  assert.equal(place(hosts, req(1, { candidates: ['h2', 'h3'] })).host, 'h2');
  const p = place(hosts, req(1, { candidates: ['nope', 'h3', 'h2'] }));
  assert.equal(p.host, 'h2');
  assert.match(
    p.explanation,
    /first requested destination that fits \(nope: unknown host.*; h3: cordoned\)/,
  );
  assert.deepEqual(
    p.verdicts.map((v) => v.host),
    ['nope', 'h3', 'h2', 'h1'],
  );
  const err = refusal(() => place(hosts, req(8, { candidates: ['h2', 'h3'] })));
  assert.deepEqual(Object.fromEntries(verdictsOf(err).map((v) => [v.host, v.reasons.join(', ')])), {
    h2: 'needs 8.0 GiB, 4.0 GiB free',
    h3: 'cordoned',
    h1: 'not a requested destination',
  });
  const m = planMany(hosts, [{ jobId: 'j', req: req(1, { candidates: ['h3', 'h2'] }) }]).get('j');
  assert.ok(m !== undefined && !(m instanceof DroverError));
  assert.equal(m.host, 'h2');
});

/** Sum of planned memory per host from a plan; asserts every placement is a Placement or refusal. */
function loads(
  plan: Map<string, unknown>,
  sizes: Map<string, number>,
): { perHost: Map<string, number>; count: Map<string, number>; refused: DroverError[] } {
  const perHost = new Map<string, number>();
  const count = new Map<string, number>();
  const refused: DroverError[] = [];
  for (const [jobId, p] of plan) {
    if (p instanceof DroverError) {
      refused.push(p);
      continue;
    }
    const { host: h } = p as { host: string };
    perHost.set(h, (perHost.get(h) ?? 0) + sizes.get(jobId)!);
    count.set(h, (count.get(h) ?? 0) + 1);
  }
  return { perHost, count, refused };
}

test('a batch of 100 jobs spreads across hosts without exceeding any host memory', () => {
  const hosts = ['h1', 'h2', 'h3', 'h4', 'h5'].map((n) => host(n, { availGiB: 10 }));
  hosts.push(host('src', { availGiB: 100 }));
  const sizes = new Map<string, number>();
  const requests = Array.from({ length: 100 }, (_, i) => {
    const memoryBytes = (200 + (i % 7) * 50) * MiB;
    sizes.set(`j${i}`, memoryBytes);
    return { jobId: `j${i}`, req: { memoryBytes, cpuFlags: ['sse2'], exclude: ['src'] } };
  });
  const plan = planMany(hosts, requests);
  assert.deepEqual(
    [...plan.keys()],
    requests.map((r) => r.jobId),
  );
  const { perHost, count, refused } = loads(plan, sizes);
  assert.equal(refused.length, 0);
  assert.equal(perHost.get('src'), undefined);
  for (const h of hosts.slice(0, 5)) {
    assert.ok((perHost.get(h.host) ?? 0) <= 10 * GiB, `${h.host} over its memory`);
    assert.ok((count.get(h.host) ?? 0) >= 15, `${h.host} got only ${count.get(h.host) ?? 0} jobs`);
  }
});

test('a batch larger than the cluster refuses the jobs that do not fit, never overfilling a host', () => {
  const hosts = ['h1', 'h2', 'h3'].map((n) => host(n, { availGiB: 1 }));
  const sizes = new Map<string, number>();
  const requests = Array.from({ length: 12 }, (_, i) => {
    sizes.set(`j${i}`, 300 * MiB);
    return { jobId: `j${i}`, req: { memoryBytes: 300 * MiB, cpuFlags: [] } };
  });
  const { perHost, refused } = loads(planMany(hosts, requests), sizes);
  assert.deepEqual([...perHost.values()], [900 * MiB, 900 * MiB, 900 * MiB]);
  assert.equal(refused.length, 3);
  for (const err of refused) {
    assert.equal(err.code, ErrorCode.FailedPrecondition);
    assert.match(
      err.message,
      /h1: needs 300 MiB, 124 MiB free \(1\.0 GiB available, 900 MiB planned\)/,
    );
    assert.equal(verdictsOf(err).length, 3);
  }
  assert.equal(
    refusal(() => planMany(hosts, [requests[0]!, requests[0]!])).code,
    ErrorCode.InvalidArgument,
  );
});

test('a batch plans its largest jobs first, so a big job is not crowded out by small ones', () => {
  const hosts = [host('a', { availGiB: 3 }), host('b', { availGiB: 2 })];
  // In input order the two 1 GiB jobs would leave no host with 3 GiB for the last one.
  const requests = [1, 1, 3].map((g, i) => ({ jobId: `j${i}`, req: req(g) }));
  const plan = planMany(hosts, requests);
  assert.deepEqual(
    [...plan].map(([id, p]) => [id, p instanceof DroverError ? p.code : p.host]),
    [
      ['j0', 'b'],
      ['j1', 'b'],
      ['j2', 'a'],
    ],
  );
});

test('planMany agrees with place job by job', () => {
  const hosts = [
    host('a', { availGiB: 6, jobs: 2 }),
    host('b', { availGiB: 3 }),
    host('c', { availGiB: 9, jobs: 5 }),
  ];
  const requests = [3, 2, 2, 1, 1, 1].map((g, i) => ({ jobId: `j${i}`, req: req(g) }));
  const plan = planMany(hosts, requests);
  const plannedMemoryBytes: Record<string, number> = {};
  const plannedJobs: Record<string, number> = {};
  for (const r of requests) {
    const expected = place(hosts, { ...r.req, plannedMemoryBytes, plannedJobs });
    const got = plan.get(r.jobId) as { host: string };
    assert.equal(got.host, expected.host, r.jobId);
    plannedMemoryBytes[got.host] = (plannedMemoryBytes[got.host] ?? 0) + r.req.memoryBytes;
    plannedJobs[got.host] = (plannedJobs[got.host] ?? 0) + 1;
  }
});

test('10,000 jobs over 1,000 hosts are planned (timing reported, not asserted)', (t) => {
  const hosts = Array.from({ length: 1000 }, (_, i) =>
    host(`h${String(i).padStart(4, '0')}`, {
      availGiB: 32 + (i % 5) * 8,
      jobs: i % 4,
      cordoned: i % 97 === 0,
      flags: i % 10 === 0 ? ['fpu', 'sse2'] : BASE_FLAGS,
    }),
  );
  const sizes = new Map<string, number>();
  const requests = Array.from({ length: 10_000 }, (_, i) => {
    const memoryBytes = (256 + (i % 16) * 256) * MiB;
    sizes.set(`j${i}`, memoryBytes);
    const cpuFlags = i % 3 === 0 ? ['avx2'] : ['sse2'];
    return {
      jobId: `j${i}`,
      req: { memoryBytes, cpuFlags, exclude: [`h${String(i % 1000).padStart(4, '0')}`] },
    };
  });
  const t0 = performance.now();
  const plan = planMany(hosts, requests);
  const ms = performance.now() - t0;
  t.diagnostic(`planMany: 10,000 jobs over 1,000 hosts in ${ms.toFixed(1)} ms`);
  const { perHost, refused } = loads(plan, sizes);
  assert.equal(refused.length, 0);
  const byName = new Map(hosts.map((h) => [h.host, h]));
  for (const [h, used] of perHost) {
    const v = byName.get(h)!;
    assert.ok(!v.cordoned, `${h} is cordoned`);
    assert.ok(used <= v.info.memory.availableBytes, `${h} over its memory`);
  }
  for (const [jobId, p] of plan) {
    const i = Number(jobId.slice(1));
    const chosen = (p as { host: string }).host;
    assert.notEqual(
      chosen,
      `h${String(i % 1000).padStart(4, '0')}`,
      `${jobId} placed on its excluded host`,
    );
    if (i % 3 === 0)
      assert.ok(byName.get(chosen)!.info.cpuFlags.includes('avx2'), `${jobId} on ${chosen}`);
  }
});

test('an all-refused batch of 5,000 jobs over 1,000 hosts stays cheap (timing reported)', (t) => {
  const hosts = Array.from({ length: 1000 }, (_, i) => host(`h${i}`, { cordoned: true }));
  const requests = Array.from({ length: 5000 }, (_, i) => ({ jobId: `j${i}`, req: req(1) }));
  const t0 = performance.now();
  const plan = planMany(hosts, requests);
  t.diagnostic(`all refused: ${(performance.now() - t0).toFixed(1)} ms`);
  for (const p of plan.values()) {
    assert.ok(isDroverError(p, ErrorCode.FailedPrecondition));
    assert.equal(verdictsOf(p).length, 1000);
    assert.match(p.message, /h0: cordoned;.*and 980 more$/);
  }
});
