/**
 * Heartbeats that heavy work on the main thread cannot stop: the main side of the heartbeat
 * thread (heartbeat-worker.ts). It starts the worker, feeds it the heartbeat's content every
 * interval and a tick with the event loop's lag every 250 ms, logs the lag when it is high, and
 * restarts the worker if it dies.
 */
import { Worker } from 'node:worker_threads';
import type { BusOptions } from '@drover/bus';
import {
  DroverError,
  ErrorCode,
  watchEventLoopLag,
  type Logger,
  type LogLevel,
} from '@drover/common';
import type { AgentInfo } from '@drover/protocol';
import type {
  FromHeartbeatWorker,
  HeartbeatWorkerData,
  ToHeartbeatWorker,
} from './heartbeat-worker.js';

/** How often the main thread tells the worker it is alive. */
const TICK_MS = 250;
/** A worker that died is started again after this pause. */
const RESTART_MS = 1000;

/** Options of {@link startHeartbeats}. */
export interface HeartbeatOptions {
  hostId: string;
  startedAt: number;
  intervalMs: number;
  bus: BusOptions;
  logLevel: LogLevel;
  logger: Logger;
  /** The heartbeat's content (jobs, memory, ...), read on the main thread every interval. */
  info(): Promise<AgentInfo>;
}

/** Running heartbeats. */
export interface Heartbeats {
  /** Stop the worker (it flushes and closes its connection). */
  stop(): Promise<void>;
}

/** Start the heartbeat thread; resolves once it is connected and has sent the first heartbeat. */
export async function startHeartbeats(o: HeartbeatOptions): Promise<Heartbeats> {
  const log = o.logger.child({ component: 'heartbeat' });
  let lagMs = 0;
  const stopLag = watchEventLoopLag({ logger: log, onWindow: (w) => (lagMs = w.maxMs) });
  const { logger: _drop, ...bus } = o.bus;
  const data: HeartbeatWorkerData = {
    hostId: o.hostId,
    startedAt: o.startedAt,
    intervalMs: o.intervalMs,
    bus,
    logLevel: o.logLevel,
  };
  let worker: Worker;
  let stopping = false;
  let everReady = false;
  const send = (m: ToHeartbeatWorker): void => worker.postMessage(m);
  const feed = async (): Promise<void> => {
    try {
      send({ type: 'info', info: await o.info() });
    } catch (err) {
      log.warn('cannot read the heartbeat content', { err });
    }
  };
  const spawn = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      worker = new Worker(new URL('./heartbeat-worker.js', import.meta.url), { workerData: data });
      worker.on('message', (m: FromHeartbeatWorker) => {
        if (m.type === 'ready') {
          everReady = true;
          resolve();
        } else if (m.type === 'failed') {
          reject(
            new DroverError(
              ErrorCode.Unavailable,
              `the heartbeat thread cannot connect to NATS: ${m.message}`,
              { retryable: true },
            ),
          );
        }
      });
      worker.on('error', (err) => {
        log.error('heartbeat thread failed', { err });
        reject(err);
      });
      worker.on('exit', (code) => {
        // A worker that never connected failed the start: the caller has the error.
        if (stopping || !everReady) return;
        log.error('heartbeat thread exited; starting it again', { code });
        setTimeout(() => {
          if (!stopping) {
            void spawn().catch((err: unknown) => log.error('heartbeat thread', { err }));
          }
        }, RESTART_MS).unref();
      });
      void feed();
    });
  await spawn();
  const ticker = setInterval(() => send({ type: 'tick', lagMs }), TICK_MS);
  const feeder = setInterval(() => void feed(), o.intervalMs);
  return {
    async stop() {
      stopping = true;
      clearInterval(ticker);
      clearInterval(feeder);
      stopLag();
      const w = worker;
      const stopped = new Promise<void>((r) => {
        w.on('message', (m: FromHeartbeatWorker) => m.type === 'stopped' && r());
        w.once('exit', () => r());
      });
      w.postMessage({ type: 'stop' } satisfies ToHeartbeatWorker);
      const late = setTimeout(() => void w.terminate(), 3000);
      await stopped;
      clearTimeout(late);
      await w.terminate();
    },
  };
}
