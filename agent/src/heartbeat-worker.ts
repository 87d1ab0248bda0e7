/**
 * The agent's heartbeat thread: a worker with its own NATS connection that publishes the host's
 * heartbeat every interval and answers liveness probes (`drover.live.<host>`), so neither stops
 * while the main thread is busy (hashing, sealing, a long synchronous step on a loaded machine).
 * The main thread sends it the heartbeat's content and a tick every 250 ms; how long the ticks
 * have stopped is the main thread's stall, reported with every heartbeat and probe answer.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Bus, type BusOptions } from '@drover/bus';
import { jsonLogger, type LogLevel } from '@drover/common';
import {
  heartbeatSubject,
  livenessSubject,
  okReply,
  type AgentInfo,
  type LivenessReply,
  type LoopHealth,
} from '@drover/protocol';

/** What the main thread gives the worker at start. */
export interface HeartbeatWorkerData {
  hostId: string;
  /** The agent's start (epoch ms): uptime counts from it. */
  startedAt: number;
  intervalMs: number;
  /** BusOptions without the logger (not cloneable). */
  bus: Omit<BusOptions, 'logger'>;
  logLevel: LogLevel;
}

/** Messages from the main thread. */
export type ToHeartbeatWorker =
  { type: 'info'; info: AgentInfo } | { type: 'tick'; lagMs: number } | { type: 'stop' };

/** Messages to the main thread. */
export type FromHeartbeatWorker =
  { type: 'ready' } | { type: 'failed'; message: string } | { type: 'stopped' };

async function main(): Promise<void> {
  const port = parentPort!;
  const data = workerData as HeartbeatWorkerData;
  const log = jsonLogger((l) => process.stderr.write(l), { level: data.logLevel }).child({
    component: 'heartbeat',
    host: data.hostId,
  });
  let info: AgentInfo | null = null;
  let lagMs = 0;
  let lastTick = performance.now();
  const loop = (): LoopHealth => ({
    lagMs,
    stalledMs: Math.max(0, Math.round(performance.now() - lastTick)),
  });
  const uptimeSec = (): number => Math.round((Date.now() - data.startedAt) / 1000);

  let bus: Bus;
  try {
    bus = await Bus.connect({ ...data.bus, logger: log });
  } catch (err) {
    port.postMessage({ type: 'failed', message: (err as Error).message } as FromHeartbeatWorker);
    return;
  }
  const beat = (): void => {
    if (info === null) return;
    try {
      bus.publish(heartbeatSubject(data.hostId), {
        ...info,
        time: new Date().toISOString(),
        uptimeSec: uptimeSec(),
        loop: loop(),
      } satisfies AgentInfo);
    } catch (err) {
      log.warn('heartbeat failed', { err });
    }
  };
  bus.serve(livenessSubject(data.hostId), async () =>
    okReply({
      host: data.hostId,
      pid: process.pid,
      uptimeSec: uptimeSec(),
      loop: loop(),
    } satisfies LivenessReply),
  );
  const timer = setInterval(beat, data.intervalMs);
  port.on('message', (m: ToHeartbeatWorker) => {
    if (m.type === 'tick') {
      lastTick = performance.now();
      lagMs = m.lagMs;
    } else if (m.type === 'info') {
      const first = info === null;
      info = m.info;
      lastTick = performance.now();
      if (first) beat();
    } else {
      clearInterval(timer);
      void bus
        .flush()
        .catch(() => undefined)
        .then(() => bus.close())
        .finally(() => port.postMessage({ type: 'stopped' } as FromHeartbeatWorker));
    }
  });
  await bus.flush();
  port.postMessage({ type: 'ready' } as FromHeartbeatWorker);
}

void main();
