/** The downtime a job saw: the longest gap in its own heartbeat log around an operation. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Longest gap between consecutive heartbeats (`{"t": epochMs, ...}` lines) that overlaps the
 * window [fromMs, toMs]: a gap counts if it ends at or after `fromMs` and starts at or before
 * `toMs`. 0 when fewer than two beats fall there. Torn or foreign lines are skipped.
 */
export function longestGap(text: string, fromMs: number, toMs: number): number {
  let prev: number | null = null;
  let best = 0;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let t: number;
    try {
      t = (JSON.parse(line) as { t: number }).t;
    } catch {
      continue;
    }
    if (typeof t !== 'number') continue;
    if (prev !== null && t >= fromMs && prev <= toMs) best = Math.max(best, t - prev);
    prev = t;
  }
  return best;
}

/** `longestGap` of `<dir>/heartbeat.log`. */
export async function heartbeatGap(dir: string, fromMs: number, toMs: number): Promise<number> {
  const text = await readFile(join(dir, 'heartbeat.log'), 'utf8').catch(() => '');
  return longestGap(text, fromMs, toMs);
}
