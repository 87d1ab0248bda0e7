/**
 * What a cluster checkpoint and a restore (cluster-checkpoint.ts, cluster-restore.ts) need from
 * the controller, and the pace and persistence both keep.
 */
import { backoff, forEachLimit, retry, toDroverError } from '@drover/common';
import type {
  AgentOp,
  AgentReplies,
  AgentRequest,
  JobNetwork,
  MemberItem,
  OperationRecord,
} from '@drover/protocol';
import type { ImageSetContext } from './image-sets.js';
import type { Records } from './op-record.js';
import type { HostView } from './placement.js';

/** What cluster checkpoints and restores need from the controller. */
export interface ClusterContext extends ImageSetContext {
  ops: Records<OperationRecord>;
  hosts(): HostView[];
  agent<Op extends AgentOp>(
    host: string,
    op: Op,
    req: AgentRequest<Op>,
    timeoutMs?: number,
  ): Promise<AgentReplies[Op]>;
  /** Where a job's processes are now (null: nowhere). */
  whereIs(jobId: string): Promise<{ host: string; state: string } | null>;
  /** Every job on every reachable host. */
  allJobs(): Promise<{ host: string; id: string; name: string; state: string }[]>;
  /** Rejects unless `host` is known, reachable (or answers when asked) and not cordoned. */
  usableHost(host: string): Promise<void>;
  /**
   * A restored job takes its address (and name) back: FAILED_PRECONDITION when another job
   * holds either now (address-book.ts). A no-op for jobs on the host's network.
   */
  claimAddress(jobId: string, name: string | null, network: JobNetwork): Promise<void>;
  /** How long forward-only steps retry an unreachable agent (default 2 minutes). */
  persistMs?: number;
  /** Dumps at once on one host (default DUMPS_PER_HOST: one per CPU of the host). */
  dumpsPerHost?: number;
  /**
   * The clock a cluster checkpoint's cut is planned on: epoch ms, sub-millisecond (default
   * `performance.timeOrigin + performance.now()`, as agents read theirs).
   */
  now?: () => number;
}

/**
 * Steps that only go forward (a rollback's thaw, a stop, a resume) are retried this long while an
 * agent is unreachable (restarting, say): a job must not stay frozen because its agent blinked.
 */
const PERSIST_MS = 120_000;

/**
 * How many dumps of a cluster checkpoint run at once on one host (`--dumps-per-host`): 0, the
 * default, is one per CPU of the host (docs/CHECKPOINT.md, "Where the cut's time goes").
 */
export const DUMPS_PER_HOST = 0;

/** Pushes, fetches and restores run this many at a time across the cluster. */
export const PARALLEL = 4;
/** Dumps, pushes, fetches and restores of big jobs take long. */
export const LONG_MS = 30 * 60_000;

/**
 * Retry `fn` while it fails with a retryable error (an agent restarting), for `ctx.persistMs`
 * (PERSIST_MS by default), pausing 250 ms doubled up to 5 s.
 */
export async function persist<T>(ctx: ClusterContext, fn: () => Promise<T>): Promise<T> {
  try {
    return await retry(fn, {
      forMs: ctx.persistMs ?? PERSIST_MS,
      pauseMs: backoff(250, 5000),
      retryIf: (err) => toDroverError(err).retryable,
      onRetry: (err, _n, inMs) =>
        ctx.log.warn('retrying', { err: toDroverError(err).message, inMs }),
    });
  } catch (err) {
    throw toDroverError(err);
  }
}

/**
 * Run `fn` over the jobs of `members` in `state`, PARALLEL at a time; after a failure nothing
 * new starts, and the first error is thrown once the running calls are done.
 */
export function forEachIn(
  members: readonly MemberItem[],
  state: MemberItem['state'],
  fn: (m: MemberItem) => Promise<void>,
): Promise<void> {
  return forEachLimit(
    members.filter((m) => m.state === state),
    PARALLEL,
    fn,
  );
}

/** Drop a job's image from its host (best effort: the host's own sweep removes what is left). */
export async function dropLocalImage(
  ctx: ClusterContext,
  m: { host: string; imageId: string },
): Promise<void> {
  await ctx.agent(m.host, 'images-delete', { imageId: m.imageId }).catch(() => undefined);
}
