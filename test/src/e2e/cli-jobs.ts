/**
 * Self-checking workload jobs driven through the `drover` CLI, as the fault suites use them:
 * start one on a host and wait until it is ready, find the hosts it is live on, and verify its
 * whole state where it runs now.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentHandle } from '@drover/testbed';
import type { CliResult } from '../cluster/cli.js';
import { requestVerdict, waitReady, workloadCommand, type WorkloadName } from '../workloads/mod.js';
import { JOB_ENV, signaller, waitForValue } from './helpers.js';

/** A started workload job: its id, its directory, the host it started on. */
export interface CliJob {
  id: string;
  dir: string;
  host: string;
}

/** What the helpers need: the CLI (with the suite's identity), the run directory, the agents. */
export interface CliJobsContext {
  drover(args: string[]): Promise<CliResult>;
  runDir: string;
  agent(host: string): AgentHandle;
}

/** The CLI's JSON reply to `args`; a non-zero exit fails the test. */
export async function cliJson<T>(ctx: CliJobsContext, args: string[]): Promise<T> {
  const r = await ctx.drover(['--json', ...args]);
  assert.equal(r.code, 0, `drover ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

/**
 * Start workload `name` on `host` (named `<tag>-<name>`, its files in
 * `<runDir>/shared/<tag>-<name>`) without waiting for it to be ready.
 */
export async function launchWorkload(
  ctx: CliJobsContext,
  host: string,
  name: WorkloadName,
  tag: string,
  mb?: number,
): Promise<CliJob> {
  const dir = join(ctx.runDir, 'shared', `${tag}-${name}`);
  mkdirSync(dir, { recursive: true });
  const env = Object.entries(JOB_ENV).flatMap(([k, v]) => ['--env', `${k}=${v}`]);
  const job = await cliJson<{ id: string }>(ctx, [
    'run',
    '--host',
    host,
    '--name',
    `${tag}-${name}`,
    ...env,
    '--',
    ...workloadCommand(name, mb ? { dir, mb } : { dir }),
  ]);
  return { id: job.id, dir, host };
}

/** Start workload `name` on `host` (named `<tag>-<name>`) and wait until it is ready. */
export async function startWorkload(...args: Parameters<typeof launchWorkload>): Promise<CliJob> {
  const job = await launchWorkload(...args);
  await waitReady(job.dir, 60_000);
  return job;
}

/** The hosts a job is live on (running or frozen). */
export async function liveHosts(ctx: CliJobsContext, id: string): Promise<string[]> {
  const { jobs } = await cliJson<{ jobs: { id: string; host: string; state: string }[] }>(ctx, [
    'jobs',
  ]);
  return jobs
    .filter((j) => j.id === id && ['running', 'frozen'].includes(j.state))
    .map((j) => j.host);
}

/**
 * The job runs on exactly one host (one of `allowed`, if given) and verifies its whole state
 * there; returns the host. A host whose agent just restarted is listed once the controller hears
 * from it again: up to 30 s.
 */
export async function verifyWorkload(
  ctx: CliJobsContext,
  j: CliJob,
  allowed?: readonly string[],
): Promise<string> {
  const live = await waitForValue(async () => {
    const hosts = await liveHosts(ctx, j.id);
    return hosts.length > 0 ? hosts : undefined;
  }, 30_000).catch(() => [] as string[]);
  assert.equal(live.length, 1, `${j.id} is live on [${live.join(', ')}]`);
  if (allowed)
    assert.ok(
      allowed.includes(live[0]!),
      `${j.id} is on ${live[0]}, not one of ${allowed.join(',')}`,
    );
  const v = await requestVerdict(j.dir, signaller(ctx.agent(live[0]!), j.id), 60_000);
  assert.equal(v.ok, true, `${j.id}: ${JSON.stringify(v.details)}`);
  return live[0]!;
}

/** The helpers above bound to a suite's context (read when called: suites set it up in `before`). */
export function cliJobs(ctx: () => CliJobsContext): {
  json<T>(args: string[]): Promise<T>;
  launch(host: string, name: WorkloadName, tag: string, mb?: number): Promise<CliJob>;
  start(host: string, name: WorkloadName, tag: string, mb?: number): Promise<CliJob>;
  verify(j: CliJob): Promise<string>;
} {
  return {
    json: <T>(args: string[]) => cliJson<T>(ctx(), args),
    launch: (host, name, tag, mb) => launchWorkload(ctx(), host, name, tag, mb),
    start: (host, name, tag, mb) => startWorkload(ctx(), host, name, tag, mb),
    verify: (j) => verifyWorkload(ctx(), j),
  };
}
