/** The bench's arithmetic: a figure's median with its min and max, and ratios against baselines. Pure. */

/** Several runs of one figure, summarised. Values keep the order they were measured in. */
export interface Summary {
  median: number;
  min: number;
  max: number;
  /** How many runs. */
  n: number;
  values: number[];
}

/**
 * Median (the mean of the two middle values for an even count), min and max of `values`.
 * Non-finite values are dropped; an empty input gives NaN figures with n = 0.
 */
export function summarize(values: readonly number[]): Summary {
  const kept = values.filter((v) => Number.isFinite(v));
  if (kept.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0, values: [] };
  const sorted = [...kept].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]!, n: kept.length, values: kept };
}

/** `a / b`, or NaN when either is not a finite number or `b` is 0. */
export function ratio(a: number, b: number): number {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return NaN;
  return a / b;
}

/** Bytes per second from bytes and milliseconds (NaN for a zero or unknown duration). */
export function rate(bytes: number, ms: number): number {
  return ratio(bytes * 1000, ms);
}

/** Apply `f` to each run of a list of runs and summarise the results. */
export function summarizeBy<T>(runs: readonly T[], f: (run: T) => number): Summary {
  return summarize(runs.map(f));
}
