/** What the end-to-end suites share: waiting, job PIDs, signalling jobs through their agent. */
import assert from 'node:assert/strict';
import { AGENT_STREAM_PORT, type AgentHandle } from '@drover/testbed';
import { StreamClient, TransferError, type ClientTlsOptions } from '@drover/transfer';

/** Environment for jobs started by the suites (no io_uring: CRIU cannot dump it). */
export const JOB_ENV = { UV_USE_IO_URING: '0', PYTHONDONTWRITEBYTECODE: '1' };

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Wait until `check` is true; a check that throws counts as "not yet". */
export async function waitFor(check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  await waitForValue(async () => ((await check()) ? true : undefined), timeoutMs);
}

/** Wait until `check` returns a value; a check that throws counts as "not yet". */
export async function waitForValue<T>(
  check: () => Promise<T | undefined>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out${last ? ` (last error: ${String(last)})` : ''}`);
    await sleep(50);
  }
}

/**
 * An agent's log from `from` on, once every pattern has appeared in it: a peer sees a refusal
 * before the agent has logged it and the line has crossed the pipe, so a log is waited for,
 * never read once. Past the bound, the first pattern missing fails with the log.
 */
export async function waitForLog(
  agent: AgentHandle,
  from: number,
  patterns: readonly RegExp[],
  timeoutMs = 10_000,
): Promise<string> {
  const log = (): string => agent.process!.output().slice(from);
  await waitFor(async () => patterns.every((p) => p.test(log())), timeoutMs).catch(() => undefined);
  const seen = log();
  for (const p of patterns) assert.match(seen, p);
  return seen;
}

/** Signal a job's main process through the agent that runs it. */
export function signaller(agent: AgentHandle, jobId: string): (sig: NodeJS.Signals) => void {
  return (sig) => void agent.client.call('signal', { jobId, signal: sig as 'SIGUSR1' });
}

async function innerPidsOnce(agent: AgentHandle, jobId: string): Promise<number[]> {
  const info = await agent.client.call('inspect', { jobId });
  return info.processes
    .filter((p) => !['sleep', 'mv', 'cat'].includes(p.cmdline[0]?.split('/').pop() ?? ''))
    .map((p) => p.nspid.at(-1)!)
    .sort((a, b) => a - b);
}

/** Inner PIDs of the job's long-lived processes: two reads 30 ms apart that agree. */
export async function innerPids(agent: AgentHandle, jobId: string): Promise<number[]> {
  let prev = await innerPidsOnce(agent, jobId);
  for (let i = 0; i < 30; i++) {
    await sleep(30);
    const next = await innerPidsOnce(agent, jobId);
    if (next.join() === prev.join()) return next;
    prev = next;
  }
  return prev;
}

/**
 * The job's PIDs once transients are gone: a child between fork and exec looks like its parent
 * for a moment, so compare a few times before concluding.
 */
export async function settledPids(
  read: () => Promise<number[]>,
  expected: number[],
): Promise<number[]> {
  let got = await read();
  for (let i = 0; i < 50 && got.join() !== expected.join(); i++) {
    await sleep(20);
    got = await read();
  }
  return got;
}

/**
 * How the agent at `host` refuses a stream nobody expects from these TLS options: `remote` once
 * past TLS (its HELLO refused), another kind when the TLS handshake refused them.
 */
export async function streamRefusal(host: string, tls: ClientTlsOptions): Promise<TransferError> {
  const err = await StreamClient.connect({
    host,
    port: AGENT_STREAM_PORT,
    migrationId: 'mig-nobody-expects',
    token: 'f'.repeat(64),
    connectTimeoutMs: 5000,
    tls,
  }).then(
    (c) => {
      c.close();
      return assert.fail('a stream nobody expects was accepted');
    },
    (e: unknown) => e,
  );
  assert.ok(err instanceof TransferError, String(err));
  return err;
}

/** The `drover` cgroups left on a host, in the v2 hierarchy or any v1 one (one path a line). */
export async function droverCgroups(host: {
  exec(cmd: readonly string[]): Promise<{ stdout: string }>;
}): Promise<string> {
  const cg = await host.exec([
    'sh',
    '-c',
    'for d in /sys/fs/cgroup/drover /sys/fs/cgroup/*/drover; do [ -d "$d" ] && echo "$d"; done; true',
  ]);
  return cg.stdout.trim();
}
