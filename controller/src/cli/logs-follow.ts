/**
 * `drover logs -f`: print a job's output as it is written, wherever the job runs (the controller
 * finds its host on every read, so the follow goes on across a migration: the log travels with
 * the job and its offsets with it), until the job has ended and everything is printed.
 */
import { ErrorCode, isDroverError } from '@drover/common';
import type { ControllerRequest } from '@drover/protocol';
import { withController, type GlobalArgs } from './context.js';
import { resolveJob } from './job-ref.js';
import { UsageError } from '@drover/cli-kit';

const POLL_MS = 500;
/** How long reads may keep failing (an agent restarting, the job between hosts) before giving up. */
const GIVE_UP_MS = 30_000;
const ENDED = new Set(['exited', 'lost', 'checkpointed']);

/** `--since` as epoch ms: `10s`, `5m`, `2h`, `1d` before now, or a date-time. */
export function parseSince(text: string, now = Date.now()): number {
  const rel = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (rel) {
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[rel[2] as 'ms'];
    return Math.round(now - Number(rel[1]) * unit);
  }
  const t = Date.parse(text);
  if (/^\d{4}-\d\d-\d\d/.test(text.trim()) && Number.isFinite(t)) return t;
  throw new UsageError(
    `--since wants a duration (10s, 5m, 2h, 1d) or a time (2026-12-06T15:04:05Z), got ${JSON.stringify(text)}`,
  );
}

type Range = Omit<ControllerRequest<'logs'>, 'jobId'>;

/** Follow job `ref`'s log: first what `range` asks for, then everything written after it. */
export async function followLogs(
  argv: GlobalArgs,
  ref: string,
  range: Range,
  out: { write(text: string): unknown },
): Promise<void> {
  await withController(argv, async (_bus, ask) => {
    const jobId = await resolveJob(ask, ref);
    const first = await ask('logs', { jobId, ...range });
    out.write(first.data);
    let next = first.nextByte ?? first.sizeBytes;
    let endedReads = first.state !== undefined && ENDED.has(first.state) ? 1 : 0;
    let failingSince: number | null = null;
    for (;;) {
      // One more read once the job has ended: what it wrote last.
      if (endedReads >= 2) return;
      let chunk;
      try {
        chunk = await ask('logs', {
          jobId,
          ...(range.stream ? { stream: range.stream } : {}),
          fromByte: next,
        });
        failingSince = null;
      } catch (err) {
        if (!isDroverError(err, ErrorCode.Unavailable) && !isDroverError(err, ErrorCode.Timeout))
          throw err;
        failingSince ??= Date.now();
        if (Date.now() - failingSince > GIVE_UP_MS) throw err;
        await sleep(POLL_MS);
        continue;
      }
      out.write(chunk.data);
      next = chunk.nextByte ?? chunk.sizeBytes;
      if (chunk.state !== undefined && ENDED.has(chunk.state) && !chunk.truncated) endedReads++;
      if (!chunk.truncated) await sleep(POLL_MS);
    }
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
