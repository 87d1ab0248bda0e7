/** The agent daemon: an Agent served over NATS, with heartbeats and job events. */
import { AgentClient, Bus, serveAgentApi, type AgentHandlers } from '@drover/bus';
import { nullLogger, type Logger } from '@drover/common';
import { eventSubject, heartbeatSubject } from '@drover/protocol';
import { Agent } from './agent.js';
import type { AgentConfig } from './config.js';
import { hostAddresses, preflight } from './preflight.js';

/** A running agent daemon. */
export interface AgentDaemon {
  agent: Agent;
  bus: Bus;
  /** Stop serving (jobs keep running). */
  close(): Promise<void>;
}

/** Start an agent: find CRIU, re-attach jobs, connect to NATS, serve, heartbeat. */
export async function startAgentDaemon(
  config: AgentConfig,
  logger: Logger = nullLogger,
): Promise<AgentDaemon> {
  const log = logger.child({ host: config.hostId });
  const bus = await Bus.connect({
    servers: config.nats.servers,
    name: `drover-agent ${config.hostId}`,
    logger: log,
    ...(config.nats.tls ? { tls: config.nats.tls } : {}),
    ...(config.nats.user !== undefined ? { user: config.nats.user } : {}),
    ...(config.nats.pass !== undefined ? { pass: config.nats.pass } : {}),
    ...(config.nats.token !== undefined ? { token: config.nats.token } : {}),
    ...(config.nats.credsFile !== undefined ? { credsFile: config.nats.credsFile } : {}),
  });
  const agent = new Agent(config, {
    logger: log,
    publishEvent: (kind, value) => bus.publish(eventSubject(config.hostId, kind), value),
  });
  try {
    await agent.start();
  } catch (err) {
    await bus.close();
    throw err;
  }
  const handlers: AgentHandlers = {
    info: () => agent.info(),
    run: (r) => agent.run(r),
    adopt: (r) => agent.adopt(r),
    list: () => agent.list(),
    inspect: (r) => agent.inspect(r),
    signal: (r) => agent.signal(r),
    logs: (r) => agent.logs(r),
    freeze: (r) => agent.freeze(r),
    thaw: (r) => agent.thaw(r),
    checkpoint: (r) => agent.checkpoint(r),
    restore: (r) => agent.restore(r),
    preflight: async (r) => {
      const job = await agent.liveJob(r.jobId);
      const destination = r.destination;
      if (destination === undefined) {
        return preflight({ jobId: job.id, rootPid: job.rootPid!, hostAddresses: hostAddresses() });
      }
      const peer = new AgentClient(bus, destination);
      const info = await peer.call('info', {});
      return preflight(
        { jobId: job.id, rootPid: job.rootPid!, hostAddresses: hostAddresses() },
        {
          host: destination,
          cpuFlags: info.cpuFlags,
          checkFiles: (files) => peer.call('files-check', { files }),
        },
      );
    },
    'files-check': (r) => agent.filesCheck(r),
    'images-list': async () => ({ images: await agent.images.list() }),
    'images-delete': async (r) => ({ deleted: await agent.images.remove(r.imageId) }),
    remove: (r) => agent.remove(r),
  };
  serveAgentApi(bus, config.hostId, handlers, log);
  const beat = async (): Promise<void> => {
    try {
      bus.publish(heartbeatSubject(config.hostId), await agent.info());
    } catch (err) {
      log.warn('heartbeat failed', { err });
    }
  };
  await beat();
  const timer = setInterval(() => void beat(), config.heartbeatIntervalMs);
  await bus.flush();
  log.info('agent serving', { criu: agent.criuVersion, features: agent.features });
  return {
    agent,
    bus,
    async close() {
      clearInterval(timer);
      await agent.stop();
      await bus.close();
    },
  };
}
