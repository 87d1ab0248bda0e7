/**
 * Bounded concurrency: the one worker pool of the tree. Items run a few at a time; after a
 * failure nothing new starts, the calls already running are waited for, and the first error is
 * thrown (a caller that rolls back finds nothing still in flight).
 */

/** Run `fn` over `items`, at most `limit` at a time (at least 1); results in `items`' order. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  await runGroups(
    [items.map((item, index) => ({ item, index }))],
    () => limit,
    async (x) => {
      out[x.index] = await fn(x.item, x.index);
    },
  );
  return out;
}

/** Run `fn` over `items`, at most `limit` at a time (at least 1). */
export function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  return runGroups([items], () => limit, fn);
}

/**
 * Run `fn` over `groups`, every group at once, each with at most `limitOf(group)` calls in
 * flight (at least 1; not a positive integer: 1). After a failure nothing new starts in any
 * group.
 */
export async function runGroups<T>(
  groups: readonly (readonly T[])[],
  limitOf: (group: readonly T[]) => number | undefined,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let failed: { err: unknown } | null = null;
  const worker = async (queue: T[]): Promise<void> => {
    for (let it = queue.shift(); it !== undefined && failed === null; it = queue.shift()) {
      try {
        await fn(it);
      } catch (err) {
        failed ??= { err };
      }
    }
  };
  await Promise.all(
    groups.flatMap((group) => {
      const queue = [...group];
      const n = limitOf(group);
      const limit = n !== undefined && Number.isInteger(n) && n > 0 ? n : 1;
      return Array.from({ length: Math.min(limit, group.length) }, () => worker(queue));
    }),
  );
  if (failed !== null) throw (failed as { err: unknown }).err;
}

/**
 * `Promise.all` that waits for every promise to settle before it rejects (with the first
 * failure): nothing started is still running when the caller cleans up.
 */
export async function settleAll<T extends readonly unknown[]>(
  work: readonly [...{ [K in keyof T]: Promise<T[K]> }],
): Promise<T> {
  const settled = await Promise.allSettled(work);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}
