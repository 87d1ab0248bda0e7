/**
 * Retrying: the one loop that tries an action again after a pause, until it succeeds, fails with
 * an error not worth another try, runs out of tries or of time. Every retry in the tree uses it.
 */

/** How {@link retry} retries. */
export interface RetryOptions {
  /**
   * The pause before retry `n` (1 for the first retry), in ms. See {@link backoff} for an
   * exponential one.
   */
  pauseMs: (n: number) => number;
  /** At most this many tries in all (the first counts); default: no limit. */
  tries?: number;
  /**
   * Give up when the next try would start more than this long after the first (ms; a retry is
   * not started that would begin past it); default: no limit.
   */
  forMs?: number;
  /** Whether `err` is worth another try (default: every error is). */
  retryIf?: (err: unknown) => boolean;
  /**
   * Told before each pause (log there, or write down the failed try). `n`: the retry about to
   * be made (1 for the first). An error it throws ends the retrying with that error.
   */
  onRetry?: (err: unknown, n: number, pauseMs: number) => void | Promise<void>;
  /** The clock `forMs` is measured on (default `performance.now`). */
  now?: () => number;
}

/**
 * Run `fn` until it resolves; after a failure worth retrying (`retryIf`), pause (`pauseMs`) and
 * run it again, as long as `tries` and `forMs` allow. Throws the last error as `fn` threw it.
 * `fn` is told which retry this is (0: the first try).
 */
export async function retry<T>(fn: (n: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const now = options.now ?? (() => performance.now());
  const deadline = options.forMs === undefined ? Infinity : now() + options.forMs;
  for (let n = 0; ; n++) {
    try {
      return await fn(n);
    } catch (err) {
      const pause = options.pauseMs(n + 1);
      const more = options.tries === undefined || n + 1 < options.tries;
      if (!more || !(options.retryIf?.(err) ?? true) || now() + pause > deadline) throw err;
      await options.onRetry?.(err, n + 1, pause);
      await sleep(pause);
    }
  }
}

/**
 * Exponential pauses: `firstMs`, doubled for each retry up to `maxMs`; with `jitter`, each
 * pause is scaled by a random factor in [0.5, 1) so a crowd of retriers does not move in step.
 */
export function backoff(
  firstMs: number,
  maxMs: number,
  options: { jitter?: boolean } = {},
): (n: number) => number {
  return (n) => {
    const ms = Math.min(maxMs, firstMs * 2 ** (n - 1));
    return options.jitter === true ? ms * (0.5 + Math.random() / 2) : ms;
  };
}

/** Resolve after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
