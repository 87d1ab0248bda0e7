/**
 * Hosts that stop answering and hosts that leave, through the real CLI, a real controller and
 * real agents on a secure testbed: with one agent killed (its job still running), `drover jobs`
 * and `drover hosts` name that host on stderr and in their JSON, and exit 7 with `--strict`;
 * `drover hosts rm` is refused while the agent answers, while the host's last heartbeat lists a
 * live job, and for a viewer; with `--force` the host is gone from every list and the lists are
 * whole again.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentCluster, ControllerProcess, Testbed } from '@drover/testbed';
import { droverAs, type CliResult } from '../cluster/cli.js';
import { waitFor } from './helpers.js';

let tb: Testbed;
let cluster: AgentCluster;
let ctl: ControllerProcess;
let urls: string[];

/** `drover ARGS...` as the testbed's operator. */
const drover = (args: readonly string[]): Promise<CliResult> =>
  droverAs(urls, tb.certs!.operator, args, 60_000);

interface Listed {
  jobs?: { id: string; host: string }[];
  hosts?: { host: string; reachable: boolean; info?: { jobs: { id: string }[] } }[];
  unanswered?: string[];
}

async function listed(args: readonly string[]): Promise<Listed> {
  const r = await drover(['--json', ...args]);
  assert.equal(r.code, 0, `drover ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Listed;
}

before(async () => {
  tb = await Testbed.create({ hosts: 2, nats: 'single', secure: true });
  urls = [...tb.nats!.urls];
  cluster = await AgentCluster.start(tb);
  ctl = await ControllerProcess.start(tb, { id: 'ctl-leave', unreachableMs: 3000 });
  await waitFor(async () => ((await listed(['hosts'])).hosts ?? []).length === 2, 30_000);
});

after(async () => {
  await ctl?.kill();
  await cluster?.close();
  await tb?.teardown();
});

describe('hosts that do not answer, and hosts that leave', () => {
  let onH2 = '';

  test('with every agent up, lists are whole: no warning, --strict exits 0', async () => {
    const run = await drover(['--json', 'run', '--host', 'h2', '--', 'sleep', '600']);
    assert.equal(run.code, 0, run.stderr);
    onH2 = (JSON.parse(run.stdout) as { id: string }).id;
    const r = await drover(['jobs', '--strict']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(onH2));
    assert.doesNotMatch(r.stderr, /did not answer/);
    assert.equal((await listed(['jobs'])).unanswered, undefined);
  });

  test('an agent that stopped is named by jobs and hosts; --strict exits 7', async () => {
    // The controller knows a host's jobs from its heartbeats: once one has listed the job, `hosts
    // rm` has it to refuse (a heartbeat late on a loaded machine was not there yet).
    await waitFor(async () => {
      const h2 = (await listed(['hosts'])).hosts?.find((x) => x.host === 'h2');
      return h2?.info?.jobs.some((j) => j.id === onH2) ?? false;
    }, 30_000);
    await cluster.agent('h2').kill();
    const t0 = Date.now();
    const r = await drover(['jobs']);
    const ms = Date.now() - t0;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: 1 host did not answer; their jobs are not listed/);
    assert.match(r.stderr, /^drover: {3}h2 \(/m);
    assert.doesNotMatch(r.stdout, new RegExp(onH2), "h2's job cannot be listed");
    const json = await listed(['jobs']);
    assert.equal(json.unanswered?.length, 1);
    assert.match(json.unanswered![0]!, /^h2 \(/);
    const strict = await drover(['jobs', '--strict']);
    assert.equal(strict.code, 7, strict.stderr);
    // Once the controller calls it unreachable, h2 is not even asked: named at once.
    await waitFor(async () => {
      const h = (await listed(['hosts'])).hosts?.find((x) => x.host === 'h2');
      return h?.reachable === false;
    }, 15_000);
    const hosts = await drover(['hosts', '--strict']);
    assert.equal(hosts.code, 7, hosts.stderr);
    assert.match(hosts.stderr, /h2 \(unreachable: no heartbeat for \d+s\)/);
    assert.match(hosts.stdout, /h2\s+unreachable/);
    const quick = await drover(['jobs']);
    assert.match(quick.stderr, /h2 \(unreachable/);
    const viewerJobs = await droverAs(urls, tb.certs!.viewer, ['jobs', '--strict']);
    assert.equal(viewerJobs.code, 7, 'a viewer sees the same warning');
    console.log(`# jobs with h2 down answered in ${ms} ms`);
  });

  test('hosts rm: refused while the agent answers, with live jobs, and for a viewer', async () => {
    const alive = await drover(['hosts', 'rm', 'h1']);
    assert.equal(alive.code, 4, alive.stderr);
    assert.match(alive.stderr, /still runs its agent/);
    const busy = await drover(['hosts', 'rm', 'h2']);
    assert.equal(busy.code, 4, busy.stderr);
    assert.match(busy.stderr, new RegExp(`still has 1 live jobs \\(${onH2}\\).*drain`));
    const viewer = await droverAs(urls, tb.certs!.viewer, ['hosts', 'rm', 'h2', '--force']);
    assert.equal(viewer.code, 6, viewer.stderr);
    const unknown = await drover(['hosts', 'rm', 'h9']);
    assert.equal(unknown.code, 3, unknown.stderr);
    assert.ok(
      (await listed(['hosts'])).hosts?.some((h) => h.host === 'h2'),
      'h2 still listed',
    );
  });

  test('hosts rm --force: the host is gone from every list, which are whole again', async () => {
    const rm = await drover(['hosts', 'rm', 'h2', '--force']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.match(rm.stdout, new RegExp(`removed host h2 \\(left behind: ${onH2}\\)`));
    const hosts = await drover(['hosts', '--strict']);
    assert.equal(hosts.code, 0, hosts.stderr);
    assert.doesNotMatch(hosts.stdout, /h2/);
    const jobs = await drover(['jobs', '--strict']);
    assert.equal(jobs.code, 0, jobs.stderr);
    assert.doesNotMatch(jobs.stderr, /did not answer/);
    // Removed twice: there is nothing left to remove.
    assert.equal((await drover(['hosts', 'rm', 'h2'])).code, 3);
  });
});
