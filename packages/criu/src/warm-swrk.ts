/**
 * `criu swrk` service processes started ahead of the operations that will use them, so that an
 * operation in a time-critical window (a cluster checkpoint's cut, a migration's freeze) is one
 * RPC to a process already running: no fork of the caller, no exec, no CRIU start-up in the
 * window. A warm process serves one operation (CRIU's rule); one left unused is killed and
 * reaped by {@link WarmSwrk.drain}, or when it has waited `idleMs` (a caller that died or forgot
 * never leaks a child for long).
 */
import { nullLogger, type Logger } from '@drover/common';

/** What the stock needs of a started process (a {@link SwrkSession}; a fake in tests). */
export interface WarmProcess {
  readonly pid: number | undefined;
  /** False once the process has exited or its socket closed: not worth handing out. */
  readonly alive: boolean;
  /** Kill it and wait until it is reaped. */
  kill(): Promise<void>;
}

/** How a stock is kept. */
export interface WarmSwrkOptions {
  /** Unused processes are ended this long after the last {@link WarmSwrk.fill} (default 60 s). */
  idleMs?: number;
  /** Never more than this many waiting (default 32). */
  max?: number;
  logger?: Logger;
}

const IDLE_MS = 60_000;
const MAX = 32;

/** A stock of started processes: {@link fill} before the window, {@link take} in it. */
export class WarmSwrk<P extends WarmProcess> {
  private readonly ready: P[] = [];
  private readonly ending = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private readonly idleMs: number;
  private readonly max: number;
  private readonly log: Logger;

  /** `start` starts one process (e.g. `SwrkSession.start` with no images directory). */
  constructor(
    private readonly start: () => P,
    options: WarmSwrkOptions = {},
  ) {
    this.idleMs = options.idleMs ?? IDLE_MS;
    this.max = options.max ?? MAX;
    this.log = (options.logger ?? nullLogger).child({ component: 'criu-warm' });
  }

  /** How many are waiting. */
  get size(): number {
    return this.ready.length;
  }

  /**
   * Have `n` processes waiting (at most `max`); returns how many were started. A start that
   * fails is logged and ends the filling: the operations then start their own, as without a stock.
   */
  fill(n: number): number {
    this.prune();
    let started = 0;
    while (this.ready.length < Math.min(n, this.max)) {
      try {
        this.ready.push(this.start());
        started++;
      } catch (err) {
        this.log.warn('cannot start a warm criu swrk', { err });
        break;
      }
    }
    this.arm();
    return started;
  }

  /** A started process for one operation, now the caller's to close; null when none is waiting. */
  take(): P | null {
    this.prune();
    const p = this.ready.shift() ?? null;
    if (this.ready.length === 0) this.disarm();
    return p;
  }

  /** Kill and reap every process still waiting (and wait for those already being ended). */
  async drain(): Promise<void> {
    this.disarm();
    for (const p of this.ready.splice(0)) this.end(p);
    await Promise.all([...this.ending]);
  }

  /** Drop processes that died while waiting (reaped by their own exit handler). */
  private prune(): void {
    for (let i = this.ready.length - 1; i >= 0; i--) {
      const p = this.ready[i]!;
      if (p.alive) continue;
      this.ready.splice(i, 1);
      this.end(p);
    }
  }

  private end(p: P): void {
    const done: Promise<void> = p
      .kill()
      .catch((err: unknown) => this.log.warn('cannot end a warm criu swrk', { pid: p.pid, err }))
      .finally(() => this.ending.delete(done));
    this.ending.add(done);
  }

  private arm(): void {
    this.disarm();
    if (this.ready.length === 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.ready.length)
        this.log.info('ending unused warm criu swrk', { n: this.ready.length });
      void this.drain();
    }, this.idleMs);
    this.timer.unref();
  }

  private disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
