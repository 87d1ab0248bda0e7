/**
 * Reading the cluster's history the way operators look at it: the newest events (counting back
 * from now, shown oldest first, as `kubectl get events` and `docker events --since` do), or on
 * from a sequence number (following); and a migration's run of `dumping` or `transferring` ticks
 * (one every ~200 ms while bytes flow) folded into one event that says how many it stands for.
 */
import type { EventLog, LoggedEvent } from '@drover/bus';
import {
  fitBytes,
  hostEventWildcard,
  type ClusterEvent,
  type ControllerReplies,
  type ControllerRequest,
} from '@drover/protocol';

/** What to read. */
export interface HistoryQuery {
  /** A subject filter under the log's prefix (default: everything). */
  subjectFilter?: string;
  /** Events after this sequence number (ignored with `newest`). */
  sinceSeq?: number;
  /** At most this many (after folding). */
  limit: number;
  /** The last `limit` instead of the first after `sinceSeq`. */
  newest?: boolean;
  /** Fold each migration's runs of progress ticks. */
  fold?: boolean;
}

/** Raw events read per request to the stream. */
const BATCH = 1000;
/** The most raw events one query looks at when counting back (bounded work per request). */
const MAX_SCAN = 200_000;

/** Read the history as `q` asks. */
export async function readHistory(log: EventLog, q: HistoryQuery): Promise<ClusterEvent[]> {
  const filter = q.subjectFilter !== undefined ? { subjectFilter: q.subjectFilter } : {};
  if (q.newest !== true) {
    const folder = new TickFolder(q.fold === true);
    let since = q.sinceSeq ?? 0;
    for (;;) {
      const batch = await log.read({ ...filter, sinceSeq: since, limit: BATCH });
      for (const e of batch) if (!folder.add(e, q.limit)) return folder.rows;
      if (batch.length < BATCH) return folder.rows;
      since = batch.at(-1)!.seq;
    }
  }
  // Newest: look back over a growing window until it holds `limit` rows (or the whole log).
  const last = await log.lastSeq();
  let window = Math.max(4 * q.limit, 256);
  for (;;) {
    const from = Math.max(0, last - window);
    const folder = new TickFolder(q.fold === true);
    for (let since = from; ;) {
      const batch = await log.read({ ...filter, sinceSeq: since, limit: BATCH });
      for (const e of batch) folder.add(e, Infinity);
      if (batch.length < BATCH || batch.at(-1)!.seq >= last) break;
      since = batch.at(-1)!.seq;
    }
    if (folder.rows.length >= q.limit || from === 0 || window >= MAX_SCAN)
      return folder.rows.slice(-q.limit);
    window *= 4;
  }
}

/** Builds rows from events in order, folding each migration's consecutive progress ticks. */
export class TickFolder {
  readonly rows: ClusterEvent[] = [];
  /** migration id → its row of ticks still open (no other event of it since). */
  private readonly open = new Map<string, ClusterEvent>();

  constructor(private readonly fold: boolean) {}

  /** Add `e`; false (and nothing added) when it would make more than `limit` rows. */
  add(e: LoggedEvent, limit: number): boolean {
    const v = (e.value ?? {}) as { phase?: unknown; migrationId?: unknown };
    const migration = typeof v.migrationId === 'string' ? v.migrationId : null;
    const tick =
      this.fold && migration !== null && (v.phase === 'transferring' || v.phase === 'dumping');
    if (tick) {
      const row = this.open.get(migration);
      // One row per run of ticks of one phase (the dump's, then the transfer's).
      if (row && (row.value as { phase?: unknown }).phase === v.phase) {
        // The row shows the latest tick (the most bytes) and remembers where the run began.
        row.firstSeq ??= row.seq;
        row.firstTime ??= row.time;
        row.folded = (row.folded ?? 1) + 1;
        row.seq = e.seq;
        row.time = e.time.toISOString();
        row.value = e.value;
        return true;
      }
    }
    if (this.rows.length >= limit) return false;
    const row: ClusterEvent = {
      seq: e.seq,
      subject: e.subject,
      time: e.time.toISOString(),
      value: e.value,
    };
    this.rows.push(row);
    if (migration !== null) {
      if (tick) this.open.set(migration, row);
      else this.open.delete(migration);
    }
    return true;
  }
}

/**
 * `events`: cluster history, oldest first: after `sinceSeq` (to page on), or the `newest`;
 * progress ticks folded with `fold`. A page never holds more than a reply can carry: the rest is
 * asked for from `next`.
 */
export async function eventsPage(
  log: EventLog,
  req: ControllerRequest<'events'>,
): Promise<ControllerReplies['events']> {
  const events = await readHistory(log, {
    limit: req.limit ?? 100,
    ...(req.sinceSeq !== undefined ? { sinceSeq: req.sinceSeq } : {}),
    ...(req.host !== undefined ? { subjectFilter: hostEventWildcard(req.host) } : {}),
    ...(req.newest !== undefined ? { newest: req.newest } : {}),
    ...(req.fold !== undefined ? { fold: req.fold } : {}),
  });
  const page = fitBytes(events);
  return { events: page.items, next: page.cut ? (page.items.at(-1)?.seq ?? null) : null };
}
