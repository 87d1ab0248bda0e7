/** The suite's side of the workload contract: wait for `ready`, request verdicts and corruptions, read heartbeats. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DroverError, ErrorCode } from '@drover/common';

/** Contents of `<workdir>/ready`. `pid` is the PID the job sees (inside its PID namespace). */
export interface Ready {
  pid: number;
  name: string;
  startedAt: number;
  /** Workload-specific facts (e.g. redis `port`, memory `setupMs`). */
  [extra: string]: unknown;
}

/** Contents of `<workdir>/verdict.json`: one per SIGUSR1, `seq` counting them from 1. */
export interface Verdict {
  ok: boolean;
  name: string;
  seq: number;
  checks: number;
  details: string;
  counter?: number;
  at: number;
}

/** One heartbeat line: wall-clock ms and the job's counter. */
export interface Heartbeat {
  t: number;
  n: number;
}

/** Summary of `<workdir>/heartbeat.log`. */
export interface HeartbeatSummary {
  count: number;
  /** Longest gap between consecutive heartbeats (the downtime the job saw); 0 with < 2 lines. */
  maxGapMs: number;
  /** When that longest gap ended (ms epoch), or undefined with < 2 lines. */
  maxGapEndedAt: number | undefined;
  first: Heartbeat | undefined;
  last: Heartbeat | undefined;
}

/** How to reach the workload's main process: a PID in this process's namespace, or a function. */
export type SignalTarget = number | ((signal: NodeJS.Signals) => void);

const POLL_MS = 20;

async function readJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as unknown;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function send(target: SignalTarget, signal: NodeJS.Signals): void {
  if (typeof target === 'number') process.kill(target, signal);
  else target(signal);
}

/** Poll `probe` until it returns a value, or fail with a Timeout error naming `what`. */
async function poll<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
  abort?: AbortSignal,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (abort?.aborted === true) {
      throw new DroverError(ErrorCode.Unavailable, `gave up waiting for ${what}`, {
        cause: abort.reason,
      });
    }
    if (Date.now() >= deadline) {
      throw new DroverError(
        ErrorCode.Timeout,
        `timed out after ${timeoutMs} ms waiting for ${what}`,
        {
          retryable: true,
          details: { timeoutMs },
        },
      );
    }
    await sleep(POLL_MS);
  }
}

/**
 * Wait until the workload in `dir` has written `ready`. `abort` ends the wait early (e.g. when the
 * process exited), so a crashed workload does not cost the whole timeout.
 */
export function waitReady(dir: string, timeoutMs: number, abort?: AbortSignal): Promise<Ready> {
  return poll(
    `${dir}/ready`,
    timeoutMs,
    async () => (await readJson(path.join(dir, 'ready'))) as Ready | undefined,
    abort,
  );
}

async function currentSeq(file: string, field: 'seq' | 'n'): Promise<number> {
  const v = (await readJson(file)) as Record<string, number> | undefined;
  return v?.[field] ?? 0;
}

/**
 * Ask the workload to verify its whole state: send SIGUSR1 to `target` and wait for a verdict with
 * a higher `seq` than the one on disk before the request. Resolves with ok:false verdicts too.
 */
export async function requestVerdict(
  dir: string,
  target: SignalTarget,
  timeoutMs: number,
): Promise<Verdict> {
  const file = path.join(dir, 'verdict.json');
  const before = await currentSeq(file, 'seq');
  send(target, 'SIGUSR1');
  return poll(`a verdict after seq ${before} in ${file}`, timeoutMs, async () => {
    const v = (await readJson(file)) as Verdict | undefined;
    return v !== undefined && v.seq > before ? v : undefined;
  });
}

/**
 * Make the workload corrupt its own state on purpose (SIGUSR2) and wait for its acknowledgement in
 * `<workdir>/corrupted`; the next verification must then report ok:false.
 */
export async function requestCorruption(
  dir: string,
  target: SignalTarget,
  timeoutMs: number,
): Promise<void> {
  const file = path.join(dir, 'corrupted');
  const before = await currentSeq(file, 'n');
  send(target, 'SIGUSR2');
  await poll(`a corruption acknowledgement in ${file}`, timeoutMs, async () =>
    (await currentSeq(file, 'n')) > before ? true : undefined,
  );
}

/** Summarise `<workdir>/heartbeat.log`, skipping a torn last line. */
export async function readHeartbeats(dir: string): Promise<HeartbeatSummary> {
  let text = '';
  try {
    text = await readFile(path.join(dir, 'heartbeat.log'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const summary: HeartbeatSummary = {
    count: 0,
    maxGapMs: 0,
    maxGapEndedAt: undefined,
    first: undefined,
    last: undefined,
  };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let beat: Heartbeat;
    try {
      beat = JSON.parse(line) as Heartbeat;
    } catch {
      continue;
    }
    if (summary.last !== undefined && beat.t - summary.last.t > summary.maxGapMs) {
      summary.maxGapMs = beat.t - summary.last.t;
      summary.maxGapEndedAt = beat.t;
    }
    summary.first ??= beat;
    summary.last = beat;
    summary.count++;
  }
  return summary;
}
