/**
 * The bench's report: figures (a summary of runs, optionally against a baseline and a target),
 * rendered as a plain-text table grouped by section, and kept as JSON. Pure: no I/O.
 */
import { ratio, type Summary } from './stats.js';

/** Units figures are reported in. */
export const Unit = {
  ms: 'ms',
  us: 'µs',
  mbps: 'MB/s',
  mib: 'MiB',
  cpuPerGb: 'CPU-s/GB',
  cpuPct: '% of a core',
  count: 'count',
  ratio: '×',
} as const;
export type Unit = (typeof Unit)[keyof typeof Unit];

/** A goal a figure is held against: its median (or its ratio to the baseline) `op` `value`. */
export interface Target {
  op: '<=' | '>=';
  value: number;
  /** Which number is compared: the median, or the ratio median / baseline median. */
  of: 'median' | 'ratio';
  /** How the issue states it, e.g. "≤ 100 ms". */
  text: string;
}

/** A figure's baseline: what it is compared with, in the same unit. */
export interface Baseline {
  name: string;
  median: number;
}

/** One reported figure. */
export interface Figure {
  section: string;
  name: string;
  unit: Unit;
  summary: Summary;
  baseline?: Baseline;
  target?: Target;
  /** Why a figure is what it is, or what it leaves out. */
  note?: string;
}

/** Whether a figure meets its target: true, false, or null (no target, or nothing measured). */
export function targetMet(f: Figure): boolean | null {
  const t = f.target;
  if (!t) return null;
  const v = t.of === 'median' ? f.summary.median : figureRatio(f);
  if (!Number.isFinite(v)) return null;
  return t.op === '<=' ? v <= t.value : v >= t.value;
}

/** The figure's median over its baseline's median (NaN without a baseline). */
export function figureRatio(f: Figure): number {
  return f.baseline ? ratio(f.summary.median, f.baseline.median) : NaN;
}

/** A number for a table cell: few digits, no exponent. */
export function formatNumber(v: number, unit: Unit): string {
  if (!Number.isFinite(v)) return '–';
  if (unit === Unit.ratio) return v.toFixed(2);
  const a = Math.abs(v);
  if (a >= 100) return Math.round(v).toString();
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** "0.42×" style ratio text. */
export function formatRatio(v: number): string {
  return Number.isFinite(v) ? `${v >= 10 ? v.toFixed(1) : v.toFixed(2)}×` : '–';
}

const HEAD = ['figure', 'median', 'min', 'max', 'unit', 'n', 'vs baseline', 'target'] as const;

/** The rows of one figure's table line, as strings (also used by the Markdown renderer). */
export function figureCells(f: Figure): string[] {
  const s = f.summary;
  const r = figureRatio(f);
  const vs = f.baseline ? `${formatRatio(r)} ${f.baseline.name}` : '';
  const met = targetMet(f);
  const target = f.target ? `${f.target.text} ${met === null ? '?' : met ? 'met' : 'SHORT'}` : '';
  return [
    f.name,
    formatNumber(s.median, f.unit),
    formatNumber(s.min, f.unit),
    formatNumber(s.max, f.unit),
    f.unit,
    String(s.n),
    vs,
    target,
  ];
}

/** Sections in first-seen order, each with its figures. */
export function bySection(figures: readonly Figure[]): [string, Figure[]][] {
  const out = new Map<string, Figure[]>();
  for (const f of figures) {
    const list = out.get(f.section) ?? [];
    list.push(f);
    out.set(f.section, list);
  }
  return [...out.entries()];
}

/** A plain-text table: one block per section, columns padded to fit. */
export function renderTable(figures: readonly Figure[]): string {
  const rows = figures.map(figureCells);
  const widths = HEAD.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i >= 1 && i <= 3 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  const out: string[] = [line(HEAD), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const [section, list] of bySection(figures)) {
    out.push(`[${section}]`);
    for (const f of list) out.push(line(figureCells(f)));
  }
  return out.join('\n');
}

/** The figures' notes, one line each: `[section] figure: note`. */
export function renderNotes(figures: readonly Figure[]): string {
  return figures
    .filter((f) => f.note)
    .map((f) => `[${f.section}] ${f.name}: ${f.note}`)
    .join('\n');
}

/** The same table in Markdown (for docs/PERFORMANCE.md), one table per section. */
export function renderMarkdown(figures: readonly Figure[]): string {
  const out: string[] = [];
  for (const [section, list] of bySection(figures)) {
    out.push(`**${section}**`, '');
    out.push(`| ${HEAD.join(' | ')} |`, `| ${HEAD.map(() => '---').join(' | ')} |`);
    for (const f of list) out.push(`| ${figureCells(f).join(' | ')} |`);
    out.push('');
  }
  return out.join('\n');
}
