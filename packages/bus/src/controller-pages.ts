/**
 * Whole lists from paged replies: the controller answers `jobs`, `hosts` and `images-list` a page
 * at a time (and `events`/`audit` in pages cut by size); a client asks for page after page until
 * the list is complete. Other operations pass through unchanged.
 */
import type { ControllerClient } from './controller-rpc.js';
import type { ControllerOp, ControllerReplies, ControllerRequest } from '@drover/protocol';

/** Lists paged by a key cursor (`after`), and the field holding their items. */
const BY_KEY = { jobs: 'jobs', hosts: 'hosts', 'images-list': 'sets' } as const;
/** Lists paged by sequence number (`sinceSeq`, up to the asked `limit`), and their items. */
const BY_SEQ = { events: 'events', audit: 'entries' } as const;
/** The controller's default page of events and audit entries. */
const DEFAULT_SEQ_LIMIT = 100;

type Reply = Record<string, unknown> & { next?: string | number | null };

/**
 * Call `op`; a paged list is fetched whole (every page), with `next` null. `timeoutMs` bounds
 * each request.
 */
export async function callAllPages<Op extends ControllerOp>(
  client: ControllerClient,
  op: Op,
  req: ControllerRequest<Op>,
  timeoutMs?: number,
): Promise<ControllerReplies[Op]> {
  const call = (r: unknown): Promise<Reply> =>
    client.call(op, r as ControllerRequest<Op>, timeoutMs) as unknown as Promise<Reply>;
  const keyField = (BY_KEY as Record<string, string>)[op];
  const seqField = (BY_SEQ as Record<string, string>)[op];
  if (keyField === undefined && seqField === undefined) {
    return client.call(op, req, timeoutMs);
  }
  const field = keyField ?? seqField!;
  const asked = req as Record<string, unknown>;
  const want = seqField ? ((asked['limit'] as number | undefined) ?? DEFAULT_SEQ_LIMIT) : Infinity;
  let reply = await call(req);
  const items = [...(reply[field] as unknown[])];
  // Hosts a page could not hear from: named once for the whole list.
  const unanswered = new Set<string>();
  const heard = (r: Reply): void => {
    for (const u of (r['unanswered'] as string[] | undefined) ?? []) unanswered.add(u);
  };
  heard(reply);
  while (reply.next !== null && reply.next !== undefined && items.length < want) {
    // After a page of the `newest` events, the rest follows on from where that page was cut.
    const { newest: _newest, ...onward } = asked;
    const more = keyField
      ? { ...asked, after: reply.next }
      : { ...onward, sinceSeq: reply.next, limit: want - items.length };
    reply = await call(more);
    heard(reply);
    const got = reply[field] as unknown[];
    if (got.length === 0) break;
    items.push(...got);
  }
  const { unanswered: _last, ...rest } = reply;
  return {
    ...rest,
    [field]: items,
    next: null,
    ...(unanswered.size ? { unanswered: [...unanswered].sort() } : {}),
  } as unknown as ControllerReplies[Op];
}
