/** The per-host result table (and the lines under it for failed hosts), for humans. */
import { table } from '@drover/cli-kit';
import type { HostResult } from './fleet.js';

/** The CLI kit's, shared with drover. */
export { table };

/** The result table of a verb, failed hosts' stderr tails under it, and a one-line summary. */
export function renderResults(verb: string, results: readonly HostResult[]): string {
  const rows = results.map((r) => [
    r.host,
    r.ok ? 'ok' : `FAILED${r.error?.failure ? ` (${r.error.failure})` : ''}`,
    r.ok ? (r.changed ? 'yes' : 'no') : '-',
    r.detail.replace(/\s*\n\s*/g, ' | '),
  ]);
  const out = [table(['HOST', 'RESULT', 'CHANGED', 'DETAIL'], rows)];
  for (const r of results) {
    if (r.error?.stderrTail) {
      out.push(`\n${r.host}: stderr of the failed step (${r.error.step}):`);
      out.push(...r.error.stderrTail.split('\n').map((l) => `  ${l}`));
    }
  }
  const failed = results.filter((r) => !r.ok).length;
  const changed = results.filter((r) => r.changed).length;
  out.push(
    `\n${verb}: ${results.length} hosts, ${results.length - failed} ok, ${failed} failed, ${changed} changed`,
  );
  return out.join('\n');
}
