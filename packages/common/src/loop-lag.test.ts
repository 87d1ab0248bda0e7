/** Tests for the event-loop lag figures and the warning when the loop was blocked. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventLoopLag, watchEventLoopLag, type EventLoopLag } from './loop-lag.js';
import type { LogFields, Logger } from './logger.js';

function recorder(): Logger & { warnings: { msg: string; fields?: LogFields }[] } {
  const warnings: { msg: string; fields?: LogFields }[] = [];
  const l = {
    warnings,
    debug() {},
    info() {},
    warn(msg: string, fields?: LogFields) {
      warnings.push({ msg, ...(fields ? { fields } : {}) });
    },
    error() {},
    child: () => l,
  };
  return l;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('a blocked loop shows as lag in its window and is logged with its figures', async () => {
  const log = recorder();
  const windows: EventLoopLag[] = [];
  const stop = watchEventLoopLag({
    logger: log,
    intervalMs: 300,
    warnAboveMs: 200,
    onWindow: (w) => windows.push(w),
  });
  try {
    await sleep(400);
    const before = windows.length;
    const t0 = Date.now();
    while (Date.now() - t0 < 800) {
      // the main thread is busy: no timer can run
    }
    await sleep(700);
    const busy = windows.slice(before).find((w) => w.maxMs >= 700);
    assert.ok(busy, `no window saw the 800 ms block: ${JSON.stringify(windows)}`);
    const warned = log.warnings.find((w) => (w.fields?.['maxMs'] as number) >= 700);
    assert.ok(warned, JSON.stringify(log.warnings));
    assert.equal(warned.msg, 'event loop lagged');
    // Metrics read the last closed window, with its start.
    const lag = eventLoopLag();
    assert.ok(lag.sinceMs > 0 && lag.maxMs >= 0 && lag.p99Ms <= lag.maxMs);
  } finally {
    stop();
  }
});
