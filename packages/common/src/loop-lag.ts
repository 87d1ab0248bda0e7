/**
 * Event-loop lag of this process: how late its timers and callbacks ran, measured by Node's
 * event-loop delay histogram, read by metrics (`eventLoopLag`) and logged when high
 * (`watchEventLoopLag`). One histogram per process, shared by every reader.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { Logger } from './logger.js';

/** The event loop's delays over a window (ms). */
export interface EventLoopLag {
  /** Since when these figures were collected (epoch ms). */
  sinceMs: number;
  meanMs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** Resolution of the histogram: a delay is measured to within this (ms). */
const RESOLUTION_MS = 20;

let histogram: IntervalHistogram | null = null;
let windowStart = 0;
/** The last window the watcher closed: what metrics read between two watcher ticks. */
let lastWindow: EventLoopLag | null = null;

function started(): IntervalHistogram {
  if (histogram === null) {
    histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    histogram.enable();
    windowStart = Date.now();
  }
  return histogram;
}

const ms = (ns: number): number => Math.round(ns / 1e5) / 10;

/** The current window's figures (since the watcher last closed one). Starts measuring on first call. */
function current(): EventLoopLag {
  const h = started();
  // The histogram counts the resolution itself as delay: a quiet loop reads ~RESOLUTION_MS.
  const over = (ns: number): number => Math.max(0, ms(ns) - RESOLUTION_MS);
  return {
    sinceMs: windowStart,
    meanMs: h.count ? over(h.mean) : 0,
    p50Ms: h.count ? over(h.percentile(50)) : 0,
    p99Ms: h.count ? over(h.percentile(99)) : 0,
    maxMs: h.count ? over(h.max) : 0,
  };
}

/**
 * Event-loop lag for metrics: the last complete window of the watcher (1 s by default), or the
 * current one when no watcher runs. Cheap; never resets anything.
 */
export function eventLoopLag(): EventLoopLag {
  return lastWindow ?? current();
}

/**
 * Close a window every `intervalMs`: its figures become what `eventLoopLag` reports, and a
 * window whose longest delay is over `warnAboveMs` is logged (a warning: the process answered
 * that late). `onWindow` sees every window. Returns the function that stops it.
 */
export function watchEventLoopLag(options: {
  logger: Logger;
  intervalMs?: number;
  warnAboveMs?: number;
  onWindow?: (lag: EventLoopLag) => void;
}): () => void {
  const warnAbove = options.warnAboveMs ?? 500;
  started();
  const timer = setInterval(() => {
    const lag = current();
    histogram!.reset();
    windowStart = Date.now();
    lastWindow = lag;
    if (lag.maxMs > warnAbove) {
      options.logger.warn('event loop lagged', {
        maxMs: lag.maxMs,
        p99Ms: lag.p99Ms,
        windowMs: windowStart - lag.sinceMs,
      });
    }
    options.onWindow?.(lag);
  }, options.intervalMs ?? 1000);
  timer.unref();
  return () => clearInterval(timer);
}
