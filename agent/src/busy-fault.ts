/**
 * The `busy-main=MS` fault (`DROVER_FAULT`): each long operation (image fetch, push and move,
 * checkpoint, a cluster's dumps, restore, migrate) keeps the agent's main thread busy for MS milliseconds right
 * after it starts, as CPU-heavy work on a loaded machine does. The liveness suite uses it to show
 * that a busy agent is not taken for a dead one.
 */

/** Operations the fault applies to. */
export const BUSY_OPS = [
  'image-fetch',
  'image-push',
  'image-move',
  'checkpoint',
  'checkpoint-many',
  'restore',
  'migrate',
] as const;

/** The `busy-main` milliseconds of a fault spec (0: none). */
export function busyMainMs(spec: string | undefined): number {
  for (const part of (spec ?? '').split(',')) {
    const [k, v] = part.split('=');
    if (k === 'busy-main' && /^\d+$/.test(v ?? '')) return Number(v);
  }
  return 0;
}

/** Wrap `handler` so that each call starts it, then keeps this thread busy for `ms`. */
export function busyAfterStart<A extends unknown[], R>(
  ms: number,
  handler: (...args: A) => Promise<R>,
): (...args: A) => Promise<R> {
  if (ms <= 0) return handler;
  return (...args) => {
    const running = handler(...args);
    const until = performance.now() + ms;
    while (performance.now() < until) {
      // busy: no timer, no I/O callback of this thread runs meanwhile
    }
    return running;
  };
}
