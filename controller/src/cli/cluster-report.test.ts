import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { OperationRecord } from '@drover/protocol';
import { clusterReport } from './cluster-report.js';

const op: OperationRecord = {
  opId: 'op-1',
  kind: 'checkpoint',
  state: 'done',
  createdAt: '2026-12-06T00:00:00Z',
  updatedAt: '2026-12-06T00:00:01Z',
  request: { leaveRunning: true },
  placement: null,
  migration: null,
  error: null,
  imageSet: 's1',
  phase: 'finished',
  members: [],
  freezeSkewMs: 1.4,
  frozenMs: 800,
  freezes: [
    { host: 'h1', jobIds: ['a', 'b', 'c'], requests: 1, skewMs: 0.4 },
    { host: 'h2', jobIds: ['d'], requests: 1, skewMs: 0 },
    { host: 'h3', jobIds: ['e', 'f'], requests: 2, skewMs: 3 },
  ],
};

test('a checkpoint report says the skew and how each host froze its jobs', () => {
  const out = clusterReport(op);
  assert.match(
    out,
    /freeze skew 1\.4 ms \(first to last job frozen\) · frozen 800 ms · jobs left running/,
  );
  assert.match(
    out,
    /^freezes: h1 3 jobs in 1 request \(0\.4 ms apart\), h2 1 job in 1 request, h3 2 jobs in 2 requests \(3 ms apart\)$/m,
  );
  // Records from before per-host freezing have no such line.
  const { freezes: _, ...before } = op;
  assert.doesNotMatch(clusterReport(before), /freezes:/);
  // Nor an unscheduled cut (or one from before scheduling) a cut line.
  assert.doesNotMatch(out, /^cut:/m);
});

test('a scheduled cut: how far ahead, in how many plans, the skew on the controller clock', () => {
  const out = clusterReport({
    ...op,
    cut: { atMs: 1_800_000_000_000, marginMs: 50, attempts: 2, skewMs: 0.9 },
  });
  assert.match(
    out,
    /^cut: scheduled 50 ms ahead \(2 plans\); skew 0\.9 ms on the controller's clock$/m,
  );
  assert.doesNotMatch(out, /cut skew/);
});

test("a cut whose requests are known: the cut skew first, the frozen reports' skew after", () => {
  const out = clusterReport({
    ...op,
    requestSkewMs: 0.3,
    cut: { atMs: 1_800_000_000_000, marginMs: 100, attempts: 1, skewMs: 0.9, requestSkewMs: 0.4 },
  });
  assert.match(
    out,
    /^cut skew 0\.3 ms \(first to last freeze requested\) · freeze skew 1\.4 ms \(first to last job frozen\)/m,
  );
  assert.match(out, /skew 0\.9 ms on the controller's clock \(requests 0\.4 ms\)$/m);
});
