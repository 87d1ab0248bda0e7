/**
 * Pages of lists that may be of any size (jobs, hosts, image sets, events, audit entries): a
 * reply holds at most `limit` items and never more than PAGE_BYTES of them, and says where the
 * next page starts (`next`, null on the last page). Pure functions; each list's order is its own.
 */
import { int, opt, str, type OptionalSchema } from './schema.js';
import { ID_PATTERN } from './names.js';

/** The most item bytes one reply carries: well under the 1 MiB message limit. */
export const PAGE_BYTES = 768 * 1024;
/** The most items a request may ask for in one page. */
export const PAGE_LIMIT_MAX = 5000;

/** The paging fields of a list request: start after `after` (a key), at most `limit` items. */
export const pageFields = (): {
  after: OptionalSchema<string>;
  limit: OptionalSchema<number>;
} => ({
  after: opt(str({ min: 1, max: 128, pattern: ID_PATTERN })),
  limit: opt(int({ min: 1, max: PAGE_LIMIT_MAX })),
});

/** One page: its items, and the key to ask `after` for the next page (null: this is the last). */
export interface Page<T> {
  items: T[];
  next: string | null;
}

/** How many bytes an item takes in a reply (its JSON). */
export function jsonBytes(v: unknown): number {
  return Buffer.byteLength(JSON.stringify(v));
}

/**
 * The page of `sorted` (in the order of `key`, ascending, or descending with `descending`) that
 * starts after key `after`: at most `limit` items and `budgetBytes` of them (always at least one).
 */
export function pageOf<T>(
  sorted: readonly T[],
  key: (item: T) => string,
  opts: {
    after?: string | undefined;
    limit?: number | undefined;
    budgetBytes?: number;
    descending?: boolean;
  },
): Page<T> {
  const beyond = (k: string): boolean =>
    opts.after === undefined || (opts.descending ? k < opts.after : k > opts.after);
  const limit = opts.limit ?? Number.POSITIVE_INFINITY;
  const budget = opts.budgetBytes ?? PAGE_BYTES;
  const items: T[] = [];
  let bytes = 0;
  let i = sorted.findIndex((it) => beyond(key(it)));
  if (i < 0) return { items, next: null };
  for (; i < sorted.length; i++) {
    const b = jsonBytes(sorted[i]) + 1;
    if (items.length >= limit || (items.length > 0 && bytes + b > budget)) break;
    items.push(sorted[i]!);
    bytes += b;
  }
  return { items, next: i < sorted.length ? key(items[items.length - 1]!) : null };
}

/**
 * The leading items of `items` that fit `budgetBytes` (always at least one), and whether any were
 * left out: for lists paged by their own cursor (a sequence number).
 */
export function fitBytes<T>(
  items: readonly T[],
  budgetBytes = PAGE_BYTES,
): { items: T[]; cut: boolean } {
  let bytes = 0;
  let n = 0;
  for (; n < items.length; n++) {
    const b = jsonBytes(items[n]) + 1;
    if (n > 0 && bytes + b > budgetBytes) break;
    bytes += b;
  }
  return { items: items.slice(0, n), cut: n < items.length };
}
