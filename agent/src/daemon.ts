/** The agent daemon: an Agent served over NATS, with heartbeats and job events. */
import { readFile } from 'node:fs/promises';
import {
  AgentClient,
  Bus,
  busOptionsFrom,
  ObjectFiles,
  serveAgentApi,
  type AgentHandlers,
} from '@drover/bus';
import { prepareCutTimer } from '@drover/cgroup';
import { compileRpcCodecs } from '@drover/criu';
import { DroverError, ErrorCode, nullLogger, type Logger } from '@drover/common';
import { eventSubject, IMAGE_SET_BUCKET } from '@drover/protocol';
import { serveMetrics, type MetricsServer } from '@drover/metrics';
import { Agent } from './agent.js';
import { AgentMetrics } from './agent-metrics.js';
import { decodeStoredImage, fetchImage, moveImage, pushImage } from './image-sets.js';
import { startHeartbeats, type Heartbeats } from './heartbeat.js';
import { busyAfterStart, busyMainMs, BUSY_OPS } from './busy-fault.js';
import type { AgentConfig } from './config.js';
import { readCrl, watchCrl } from './crl-watch.js';
import { hostAddresses, preflight, preflightInputOf } from './preflight.js';
import { StreamServer } from '@drover/transfer';
import { parseFaults, type MigrationContext } from './migration/context.js';
import { abortMigration, commitMigration, prepareMigration } from './migration/destination.js';
import { MigrationStore } from './migration/migration-store.js';
import { recoverMigrations } from './migration/recovery.js';
import { destinationFacts, migrateJob } from './migration/source-admit.js';
import { MigrationAuthorizations } from './migration/authorization.js';

/** A running agent daemon. */
export interface AgentDaemon {
  agent: Agent;
  bus: Bus;
  /** Where its metrics are served (`--metrics-addr`), if anywhere. */
  metricsUrl: string | null;
  /** Stop serving (jobs keep running). */
  close(): Promise<void>;
}

/** Start an agent: find CRIU, re-attach jobs, connect to NATS, serve, heartbeat. */
export async function startAgentDaemon(
  config: AgentConfig,
  logger: Logger = nullLogger,
): Promise<AgentDaemon> {
  const log = logger.child({ host: config.hostId });
  const busOptions = busOptionsFrom(config.nats, `drover-agent ${config.hostId}`, log);
  const bus = await Bus.connect(busOptions);
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
  // A scheduled cut is made by the cut timer's thread; it boots now, not in a cut's margin.
  prepareCutTimer({ priority: config.cutPriority, log }).catch((err: unknown) =>
    log.warn('the cut timer did not start', { err }),
  );
  // CRIU's RPC codecs are compiled now, not in the first dump's or restore's frozen window.
  compileRpcCodecs();
  const [listenHost, listenPort] = splitHostPort(config.streamListen);
  // Mutual TLS on agent-to-agent streams as soon as certificates are configured.
  const crlFile = config.streamTls?.crlFile;
  const crl = crlFile !== undefined ? readCrl(crlFile, log) : null;
  const tls: MigrationContext['tls'] = config.streamTls
    ? {
        ca: await readFile(config.streamTls.caFile, 'utf8'),
        cert: await readFile(config.streamTls.certFile, 'utf8'),
        key: await readFile(config.streamTls.keyFile, 'utf8'),
        ...(crl !== null ? { crl } : {}),
      }
    : undefined;
  let streams: StreamServer;
  try {
    streams = await StreamServer.listen({
      host: listenHost,
      port: listenPort,
      logger: log,
      ...(tls ? { tls } : {}),
    });
  } catch (err) {
    await bus.close();
    await agent.stop();
    throw err;
  }
  const advertiseHost =
    listenHost === '0.0.0.0' || listenHost === '::'
      ? (hostAddresses().find((a) => !a.startsWith('127.') && a !== '::1') ?? '127.0.0.1')
      : listenHost;
  const ctx: MigrationContext = {
    call: (host, op, req, timeoutMs) => new AgentClient(bus, host).call(op, req, timeoutMs),
    streams,
    authorizations: new MigrationAuthorizations(),
    advertise: { host: advertiseHost, port: streams.address().port },
    faults: parseFaults(config.fault),
    ...(tls ? { tls } : {}),
    ...(config.streamTls ? { tlsFiles: config.streamTls } : {}),
  };
  agent.stream = ctx.advertise;
  // Revocations pushed while running reach new streams (crl-watch.ts).
  const stopCrlWatch =
    crlFile !== undefined && tls
      ? watchCrl(
          crlFile,
          (next) => {
            streams.setCrl(next);
            if (next === null) delete tls.crl;
            else tls.crl = next;
          },
          log,
        )
      : (): void => {};
  const migrations = new MigrationStore(config.stateDir);
  // The image-set bucket, opened on first use (the controller creates it).
  let objects: Promise<ObjectFiles> | null = null;
  const imageObjects = (): Promise<ObjectFiles> => {
    objects ??= ObjectFiles.open(bus, { bucket: IMAGE_SET_BUCKET, create: false }).catch(
      (err: unknown) => {
        objects = null;
        throw err;
      },
    );
    return objects;
  };
  const metrics = new AgentMetrics(agent.store, {
    host: config.hostId,
    criu: () => agent.criuVersion,
  });
  bus.onReconnect(() => metrics.natsReconnects.inc());
  const handlers: AgentHandlers = metrics.instrument({
    info: () => agent.info(),
    run: (r) => agent.run(r),
    adopt: (r) => agent.adopt(r),
    list: (r) => agent.list(r),
    inspect: (r) => agent.inspect(r),
    signal: (r) => agent.signal(r),
    logs: (r) => agent.logs(r),
    'tty-write': (r) => agent.ttyWrite(r),
    freeze: (r) => agent.freeze(r),
    'freeze-many': (r) => agent.freezeMany(r),
    'criu-warm': (r) => agent.criuWarm(r),
    'dumps-prepare': (r) => agent.dumpsPrepare(r),
    // Answered at once, from this thread: the controller reads this host's clock offset from it.
    clock: async () => ({ nowMs: performance.timeOrigin + performance.now() }),
    thaw: (r) => agent.thaw(r),
    'thaw-many': (r) => agent.thawMany(r),
    checkpoint: (r) => agent.checkpoint(r),
    'checkpoint-many': (r) => agent.checkpointMany(r),
    'checkpoint-stop': (r) => agent.checkpointStop(r),
    restore: (r) => agent.restore(r),
    preflight: async (r) => {
      const job = await agent.liveJob(r.jobId);
      const input = await preflightInputOf(job);
      const destination = r.destination;
      if (destination === undefined) return preflight(input);
      const info = await new AgentClient(bus, destination).call('info', {});
      return preflight(input, destinationFacts(job, destination, info.cpuFlags, ctx.call));
    },
    'files-check': (r) => agent.filesCheck(r),
    'images-list': async () => ({ images: await agent.images.list() }),
    'images-delete': async (r) => ({ deleted: await agent.images.remove(r.imageId) }),
    'image-push': (r) => pushImage(agent, imageObjects, r, ctx.faults),
    'image-move': (r) => moveImage(agent, imageObjects, r, ctx.faults),
    'image-fetch': (r) => fetchImage(agent, imageObjects, r),
    discard: (r) => agent.discard(r),
    remove: (r) => agent.remove(r),
    'names-set': (r) => agent.setNames(r),
    'migrate-authorize': async (r) => ctx.authorizations.authorize(r),
    migrate: (r) => migrateJob(agent, ctx, r),
    'migrate-prepare': (r) => prepareMigration(agent, ctx, r),
    // Only the migration's two parties hold its ticket: checked before anything is read or done.
    'migrate-abort': async (r) => {
      await migrations.findWithTicket(r.migrationId, r.ticket);
      return abortMigration(agent, ctx, r);
    },
    'migrate-commit': async (r) => {
      await migrations.findWithTicket(r.migrationId, r.ticket);
      return commitMigration(agent, r);
    },
    'migrate-status': (r) => migrations.findWithTicket(r.migrationId, r.ticket),
    'migrations-list': async () => ({ migrations: await migrations.list() }),
    // The controller's ticket names one migration of the job: the one it authorized.
    'migrate-find': async (r) => {
      const mine = (await migrations.list())
        .filter((m) => m.jobId === r.jobId && m.role === 'source')
        .sort((a, b) => b.startedAt.localeCompare(a.startedAt));
      for (const m of mine) {
        const found = await migrations.findWithTicket(m.migrationId, r.ticket).catch(() => null);
        if (found) return found;
      }
      throw new DroverError(
        ErrorCode.NotFound,
        `no migration of ${r.jobId} with that ticket on ${config.hostId}`,
        { details: { jobId: r.jobId } },
      );
    },
    'image-decode': (r) => decodeStoredImage(imageObjects, r),
  });
  const busyMs = busyMainMs(config.fault);
  for (const op of BUSY_OPS) {
    const h = handlers[op] as (r: never) => Promise<unknown>;
    (handlers as Record<string, unknown>)[op] = busyAfterStart(busyMs, h);
  }
  serveAgentApi(bus, config.hostId, handlers, log);
  // Heartbeats and liveness probes come from a thread of their own (heartbeat.ts).
  let heartbeats: Heartbeats | null = null;
  let metricsServer: MetricsServer | null = null;
  try {
    heartbeats = await startHeartbeats({
      hostId: config.hostId,
      startedAt: agent.startedAt,
      intervalMs: config.heartbeatIntervalMs,
      bus: { ...busOptions, name: `drover-agent ${config.hostId} heartbeat` },
      logLevel: config.logLevel,
      logger: log,
      info: () => agent.info(),
    });
    if (config.metricsAddr !== undefined) {
      metricsServer = await serveMetrics(metrics.metrics, config.metricsAddr, log);
    }
  } catch (err) {
    stopCrlWatch();
    await heartbeats?.stop();
    await streams.close();
    await agent.stop();
    await bus.close();
    throw err;
  }
  const beats = heartbeats;
  // Log sizes over time: what `logs --since` starts from.
  const logSampler = setInterval(() => {
    agent.logIndex.sample().catch((err: unknown) => log.debug('log sampling failed', { err }));
  }, 1000);
  void agent.logIndex.sample().catch(() => undefined);
  // Unfinished migrations from before a restart: finish or roll back; retry the doubtful ones.
  let recovering = false;
  const recover = async (): Promise<void> => {
    if (recovering) return;
    recovering = true;
    try {
      const doubt = await recoverMigrations(agent, ctx);
      if (doubt.length === 0) clearInterval(recoveryTimer);
    } finally {
      recovering = false;
    }
  };
  const recoveryTimer = setInterval(() => void recover(), 5000);
  void recover();
  await bus.flush();
  log.info('agent serving', { criu: agent.criuVersion, features: agent.features });
  return {
    agent,
    bus,
    metricsUrl: metricsServer?.url ?? null,
    async close() {
      stopCrlWatch();
      await beats.stop();
      clearInterval(recoveryTimer);
      clearInterval(logSampler);
      await metricsServer?.close();
      await streams.close();
      await agent.stop();
      await bus.close();
    },
  };
}

function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(':');
  return [s.slice(0, i).replace(/^\[|\]$/g, ''), Number(s.slice(i + 1))];
}
