/**
 * Migration progress for the CLI: the transfer rate over the last seconds, an ETA, and what to
 * print when — a one-line bar redrawn in place on a terminal, plain periodic lines otherwise.
 * Pure: events, the clock and the writer are given, so tests drive it step by step.
 */
import type { MigrationProgressEvent } from '@drover/protocol';
import { bytes } from './output.js';

/** Bytes per second over a sliding window of (time, bytes) samples. */
export class TransferRate {
  private samples: { atMs: number; bytes: number }[] = [];

  constructor(private readonly windowMs = 3000) {}

  /** Record that `bytes` had been sent at `atMs`. */
  add(atMs: number, bytes: number): void {
    const last = this.samples.at(-1);
    if (last && (bytes < last.bytes || atMs < last.atMs)) this.samples = []; // a new transfer
    this.samples.push({ atMs, bytes });
    // Keep one sample at or before the window's start, so the window is always covered.
    while (this.samples.length > 2 && this.samples[1]!.atMs <= atMs - this.windowMs) {
      this.samples.shift();
    }
  }

  /** The rate over the window, or null before samples span half a second (too noisy before). */
  rate(): number | null {
    const first = this.samples[0];
    const last = this.samples.at(-1);
    if (!first || !last || last.atMs - first.atMs < 500) return null;
    return ((last.bytes - first.bytes) * 1000) / (last.atMs - first.atMs);
  }
}

/** Seconds left at `rate`, or null when unknown (no rate yet, or nothing moving). */
export function etaSeconds(remaining: number, rate: number | null): number | null {
  if (remaining <= 0) return 0;
  if (rate === null || !(rate > 0)) return null;
  return remaining / rate;
}

/** A duration for humans: `<1s`, `12s`, `3m05s`, `2h04m`. */
export function duration(seconds: number): string {
  if (seconds < 1) return '<1s';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** A bar of `width` cells, `fraction` (clamped to 0..1) of them full. */
export function bar(fraction: number, width: number): string {
  const full = Math.round(Math.min(1, Math.max(0, fraction)) * width);
  return '█'.repeat(full) + '░'.repeat(width - full);
}

/** What one transfer looks like right now. */
export interface TransferView {
  bytes: number;
  totalBytes: number;
  /** Bytes per second, or null when not known yet. */
  rate: number | null;
}

function figures(v: TransferView): { fraction: number; pct: string; rate: string; eta: string } {
  const fraction = v.totalBytes > 0 ? Math.min(1, v.bytes / v.totalBytes) : 0;
  const remaining = v.totalBytes - v.bytes;
  const eta = etaSeconds(remaining, v.rate);
  return {
    fraction,
    pct: `${Math.floor(fraction * 100)}%`,
    // Unknown rate (just started) or nothing left: no rate or ETA to show.
    rate: v.rate === null ? '' : `${bytes(Math.round(v.rate))}/s`,
    eta: remaining <= 0 || eta === null ? '' : `ETA ${duration(eta)}`,
  };
}

/** The terminal form: `[████░░░░]  50%  32.0 MiB / 64.0 MiB  16.0 MiB/s  ETA 2s`. */
export function renderBar(v: TransferView, width = 24): string {
  const f = figures(v);
  return [
    `[${bar(f.fraction, width)}] ${f.pct.padStart(4)}`,
    `${bytes(v.bytes)} / ${bytes(v.totalBytes)}`,
    f.rate,
    f.eta,
  ]
    .filter((x) => x !== '')
    .join('  ');
}

/** The plain form: `sent 32.0 MiB of 64.0 MiB (50%), 16.0 MiB/s, ETA 2s`. */
export function renderLine(v: TransferView): string {
  const f = figures(v);
  return [`sent ${bytes(v.bytes)} of ${bytes(v.totalBytes)} (${f.pct})`, f.rate, f.eta]
    .filter((x) => x !== '')
    .join(', ');
}

/** How a {@link MigrationProgress} prints. */
export interface ProgressOptions {
  /** Redraw one line in place (a terminal), or print plain lines. */
  tty: boolean;
  write: (text: string) => void;
  /** Milliseconds, monotonic. Default `performance.now`. */
  now?: () => number;
  /** Plain mode: at most one transfer line this often. Default 1000 ms. */
  lineEveryMs?: number;
  /** Terminal mode: at most one redraw this often (phase changes always redraw). Default 100 ms. */
  redrawEveryMs?: number;
}

/**
 * Follows one job's migration events and prints its progress: every phase once, the transfer
 * with rate and ETA (periodically in plain mode, as a bar redrawn in place on a terminal).
 */
export class MigrationProgress {
  private readonly rate = new TransferRate();
  private readonly now: () => number;
  private lastPrint = -Infinity;
  private lastKey: string | null = null;
  private drawn = false;
  private transfer: TransferView | null = null;
  private finished = false;

  constructor(
    /** The job followed (the prefix of every line). */
    readonly jobId: string,
    private readonly options: ProgressOptions,
  ) {
    this.now = options.now ?? (() => performance.now());
  }

  /** Take one event (events of other jobs are ignored). */
  onEvent(e: MigrationProgressEvent): void {
    if (e.jobId !== this.jobId || this.finished) return;
    const now = this.now();
    if ((e.phase === 'transferring' || e.phase === 'dumping') && e.bytes !== undefined) {
      this.rate.add(now, e.bytes);
      this.transfer = {
        bytes: e.bytes,
        // A log that grew after the count: never show more than 100%.
        totalBytes: Math.max(e.totalBytes ?? 0, e.bytes),
        rate: this.rate.rate(),
      };
    }
    const status = this.status(e);
    // Each new status once; the transfer itself again every so often.
    const every = this.options.tty
      ? (this.options.redrawEveryMs ?? 100)
      : (this.options.lineEveryMs ?? 1000);
    const due =
      (status.key === 'transferring' || status.key === 'dumping') && now - this.lastPrint >= every;
    if (status.key === this.lastKey && !due) return;
    this.lastKey = status.key;
    this.lastPrint = now;
    if (this.options.tty) {
      this.options.write(`\r\x1b[2K${this.jobId} → ${e.destination}  ${status.text}`);
      this.drawn = true;
    } else {
      this.options.write(`${this.jobId}: ${status.text}\n`);
    }
    if (e.phase === 'done') this.finish();
  }

  /** End the progress output (a terminal's bar line gets its newline). Idempotent. */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.options.tty && this.drawn) this.options.write('\n');
  }

  /** What to show for `e`: a key that changes with the phase, and the text. */
  private status(e: MigrationProgressEvent): { key: string; text: string } {
    switch (e.phase) {
      case 'prepared':
        return { key: 'prepared', text: `freezing and dumping (to ${e.destination})` };
      case 'dumping': {
        // The pages go straight to the destination while CRIU dumps; the total is the job's
        // memory, which CRIU may not fill (it skips pages never touched).
        const t = this.transfer ?? { bytes: 0, totalBytes: 0, rate: null };
        return { key: 'dumping', text: `dumping: ${this.transferText(t)}` };
      }
      case 'dumped': {
        const pages = e.pageBytes ? `${bytes(e.pageBytes)} of pages sent; ` : '';
        return {
          key: 'dumped',
          text: `dumped in ${e.dumpMs ?? '?'} ms; ${pages}${bytes(e.totalBytes ?? 0)} to send`,
        };
      }
      case 'transferring': {
        const t = this.transfer ?? { bytes: 0, totalBytes: 0, rate: null };
        if (t.totalBytes > 0 && t.bytes >= t.totalBytes) {
          // Everything is sent: the destination restores now.
          return { key: 'sent', text: `${this.transferText(t)}; ${e.destination} restores` };
        }
        return { key: 'transferring', text: this.transferText(t) };
      }
      case 'pulling-pages':
        return { key: 'pulling-pages', text: `running on ${e.destination}; pulling memory pages` };
      case 'done':
        return {
          key: 'done',
          text: `moved to ${e.destination}${e.stats ? `; frozen ${e.stats.frozenMs} ms` : ''}`,
        };
    }
  }

  private transferText(t: TransferView): string {
    return this.options.tty ? renderBar(t) : renderLine(t);
  }
}
