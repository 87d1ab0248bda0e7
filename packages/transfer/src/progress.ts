/** Progress reporting for both ends of a stream: counts, average rate, and call throttling. */

/** A progress report: totals so far and the average rate since the transfer started. */
export interface TransferProgress {
  /** File payload bytes moved so far. */
  bytes: number;
  /** Files completed so far. */
  files: number;
  /** Average payload rate since the start, in bytes per second. */
  rateBytesPerSec: number;
}

/** A progress callback; it must not throw (a throw is ignored). */
export type ProgressCallback = (progress: TransferProgress) => void;

/** Default minimum interval between two reports during a file. */
const REPORT_INTERVAL_MS = 200;

/**
 * Counts bytes and files and calls `callback` at most every `intervalMs` while data flows or
 * files complete, and always at the last file (`fileDone(true)`) or `reportNow`. (Once per
 * file, a directory of CRIU's ~45 small images was ~45 progress events on NATS per migration.)
 */
export class ProgressMeter {
  bytes = 0;
  files = 0;
  private readonly started = performance.now();
  private lastReport = 0;

  constructor(
    private readonly callback: ProgressCallback | undefined,
    private readonly intervalMs = REPORT_INTERVAL_MS,
  ) {}

  /** Count `n` payload bytes. */
  addBytes(n: number): void {
    this.bytes += n;
    if (this.callback && performance.now() - this.lastReport >= this.intervalMs) this.report();
  }

  /** Count one completed file; report if the interval has passed, or if it is the `last`. */
  fileDone(last = false): void {
    this.files += 1;
    if (this.callback && (last || performance.now() - this.lastReport >= this.intervalMs))
      this.report();
  }

  /** Report the figures now (the end of a transfer). */
  reportNow(): void {
    this.report();
  }

  /** The current figures. */
  snapshot(): TransferProgress {
    const seconds = (performance.now() - this.started) / 1000;
    const rateBytesPerSec = seconds > 0 ? Math.round(this.bytes / seconds) : 0;
    return { bytes: this.bytes, files: this.files, rateBytesPerSec };
  }

  private report(): void {
    if (!this.callback) return;
    this.lastReport = performance.now();
    try {
      this.callback(this.snapshot());
    } catch {
      // a broken progress callback must not break the transfer
    }
  }
}
