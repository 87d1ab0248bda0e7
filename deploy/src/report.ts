/** The per-host result table (and the lines under it for failed hosts), for humans. */
import type { HostResult } from './fleet.js';

/** Rows as an aligned table with a header; the last column is not padded. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

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
