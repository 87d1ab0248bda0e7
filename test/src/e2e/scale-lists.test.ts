/**
 * Lists of any size through the real CLI and a real controller: 10,000 jobs (one host alone
 * holding more than one reply can carry) and 600 hosts, served by simulated agents (the bench's
 * fleet: the real agent API over NATS). Before paging, both replies were over NATS's 1 MiB
 * message limit and the commands failed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ClusterFixture } from '../cluster/fixture.js';
import { SimFleet } from '../bench/sim-agent.js';
import { waitFor } from './helpers.js';

const HOSTS = 600;
const JOBS = 10_000;
/** One host with 3,000 jobs: its own list needs several pages. */
const BIG_HOST = 3000;

let f: ClusterFixture;
let fleet: SimFleet;

before(async () => {
  f = await ClusterFixture.start({
    hosts: 1,
    agents: false,
    controller: { id: 'ctl-lists', unreachableMs: 120_000, logLevel: 'info' },
  });
  const hosts = Array.from({ length: HOSTS }, (_, i) => `sim-${String(i).padStart(4, '0')}`);
  const rest = JOBS - BIG_HOST;
  const jobsPerHost = hosts.map((_, i) =>
    i === 0 ? BIG_HOST : Math.floor(rest / (HOSTS - 1)) + (i - 1 < rest % (HOSTS - 1) ? 1 : 0),
  );
  const cpuFlags = (/^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '')
    .split(/\s+/)
    .filter(Boolean);
  fleet = await SimFleet.start({
    servers: f.urls,
    hosts,
    jobsPerHost,
    connections: 4,
    heartbeatMs: 5000,
    cpuFlags,
  });
  fleet.startHeartbeats();
  await waitFor(
    async () => (f.controller.output().match(/host joined/g) ?? []).length >= HOSTS,
    60_000,
  );
});

after(async () => {
  await fleet?.close();
  await f?.stop();
});

test(`drover jobs lists all ${JOBS} jobs, each once, in order`, async () => {
  const r = await f.drover(['--json', 'jobs'], 120_000);
  assert.equal(r.code, 0, r.stderr.slice(0, 500));
  const { jobs } = JSON.parse(r.stdout) as { jobs: { id: string; host: string }[] };
  assert.equal(jobs.length, JOBS);
  const ids = jobs.map((j) => j.id);
  assert.equal(new Set(ids).size, JOBS, 'a job is listed twice');
  assert.deepEqual(
    ids,
    [...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
  );
  assert.equal(jobs.filter((j) => j.host === 'sim-0000').length, BIG_HOST);
  // One host's jobs alone: more than one reply of that agent's.
  const one = await f.drover(['--json', 'jobs', '--host', 'sim-0000'], 120_000);
  assert.equal(one.code, 0, one.stderr.slice(0, 500));
  assert.equal((JSON.parse(one.stdout) as { jobs: unknown[] }).jobs.length, BIG_HOST);
});

test(`drover hosts lists all ${HOSTS} hosts`, async () => {
  const r = await f.drover(['--json', 'hosts'], 120_000);
  assert.equal(r.code, 0, r.stderr.slice(0, 500));
  const { hosts } = JSON.parse(r.stdout) as { hosts: { host: string }[] };
  assert.equal(hosts.length, HOSTS);
  assert.equal(new Set(hosts.map((h) => h.host)).size, HOSTS);
  const table = await f.drover(['hosts'], 120_000);
  assert.equal(table.code, 0, table.stderr.slice(0, 500));
  assert.equal(table.stdout.trim().split('\n').length, HOSTS + 1, 'a header and a line per host');
});
