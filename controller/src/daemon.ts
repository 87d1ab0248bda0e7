/**
 * The controller daemon: connects, opens its state in JetStream, takes the leadership lease
 * (several controllers may run; one acts), and serves the controller API while it holds it.
 */
import {
  Bus,
  busOptionsFrom,
  EventLog,
  Lease,
  LeaseKeeper,
  ObjectFiles,
  serveControllerApi,
  serverVersionOf,
  serverVersionProblem,
  StateStore,
  type LeaseRecord,
} from '@drover/bus';
import { DroverError, nullLogger, retry, type Logger } from '@drover/common';
import {
  AUDIT_STREAM,
  AUDIT_SUBJECT_PREFIX,
  CONTROLLER_BUCKETS as B,
  IMAGE_SET_BUCKET,
  type ImageSet,
  type OperationRecord,
} from '@drover/protocol';
import { serveMetrics, type MetricsServer } from '@drover/metrics';
import { Audit, AUDIT_MAX_BYTES } from './audit.js';
import type { ControllerConfig } from './config.js';
import { Controller } from './controller.js';
import type { KnownHost } from './known-hosts.js';
import { ControllerMetrics } from './controller-metrics.js';
import type { AddressRecord, NameRecord } from './address-book.js';

/** A running controller. */
export interface ControllerDaemon {
  controller: Controller;
  bus: Bus;
  /** Where its metrics are served (`--metrics-addr`), if anywhere. */
  metricsUrl: string | null;
  close(): Promise<void>;
}

const LEASE_KEY = 'leader';

/**
 * Start a controller. Resolves once it is the acting controller; a standby keeps trying to take
 * the lease (every half TTL) and resolves when it gets it. `onLost` is called if the lease is
 * lost later: the daemon must then stop acting (main exits, its supervisor restarts it).
 */
export async function startController(
  config: ControllerConfig,
  logger: Logger = nullLogger,
  onLost: () => void = () => {},
): Promise<ControllerDaemon> {
  const log = logger.child({ controller: config.id });
  const bus = await Bus.connect(busOptionsFrom(config.nats, `drover-controller ${config.id}`, log));
  try {
    // Replicated state is safe only on a current server; a single one works on older ones too.
    const old = serverVersionProblem(serverVersionOf(bus), config.replicas);
    if (old && 'error' in old) throw old.error;
    if (old) log.warn(old.warning, { version: serverVersionOf(bus) });
    const opts = { replicas: config.replicas } as const;
    // A NATS cluster still forming has no peers to place R3 state on yet: wait for it (30 s).
    const leases = await whileForming(() =>
      StateStore.open<LeaseRecord>(bus, { bucket: B.leases, ...opts }),
    );
    const cordons = await StateStore.open<{ cordoned: boolean }>(bus, {
      bucket: B.cordons,
      ...opts,
    });
    const ops = await StateStore.open<OperationRecord>(bus, { bucket: B.ops, ...opts });
    const sets = await StateStore.open<ImageSet>(bus, { bucket: B.imageSets, ...opts });
    const keys = await StateStore.open<{ key: string }>(bus, {
      bucket: B.imageKeys,
      ...opts,
    });
    const hosts = await StateStore.open<KnownHost>(bus, { bucket: B.hosts, ...opts });
    const addresses = await StateStore.open<AddressRecord>(bus, {
      bucket: B.addresses,
      ...opts,
    });
    const names = await StateStore.open<NameRecord>(bus, { bucket: B.names, ...opts });
    const objects = await ObjectFiles.open(bus, {
      bucket: IMAGE_SET_BUCKET,
      create: true,
      replicas: config.replicas,
    });
    // Captures every agent event published on drover.evt.> from now on: the cluster's history.
    const events = await EventLog.open(bus, opts);
    // Who asked for what: written before the controller acts on any change (audit.ts).
    const audit = new Audit(
      await EventLog.open(bus, {
        ...opts,
        stream: AUDIT_STREAM,
        subjectPrefix: AUDIT_SUBJECT_PREFIX,
        maxAgeMs: config.auditRetentionDays * 24 * 3600 * 1000,
        maxBytes: AUDIT_MAX_BYTES,
      }),
      config.id,
      config.nats.tls?.certFile !== undefined,
      log,
    );
    let lease: Lease | null = null;
    while (lease === null) {
      lease = await Lease.acquire(leases, LEASE_KEY, config.id, config.leaseTtlMs).catch(
        (err: unknown) => {
          if (err instanceof DroverError && err.retryable) return null;
          throw err;
        },
      );
      if (lease === null) await new Promise((r) => setTimeout(r, config.leaseTtlMs / 2));
    }
    const keeper = new LeaseKeeper(lease, {
      onLost: () => {
        log.error('lost the controller lease; stopping');
        onLost();
      },
    });
    keeper.start();
    // eslint-disable-next-line prefer-const -- the metrics read the controller's hosts
    let controller: Controller;
    const metrics = new ControllerMetrics(() => controller.registry.list());
    bus.onReconnect(() => metrics.natsReconnects.inc());
    controller = new Controller(
      bus,
      { cordons, ops, events, sets, objects, keys, hosts, addresses, names },
      {
        unreachableAfterMs: config.unreachableAfterMs,
        imageRetention: config.imageRetention,
        dumpsPerHost: config.dumpsPerHost,
        logger: log,
        metrics,
        jobNetwork: config.jobNetwork,
      },
    );
    await controller.start();
    // What depends on the hosts waits until the controller has heard from all of them
    // (known-hosts.ts): a fresh controller never says "no such job" for one that exists.
    const ready =
      <A, R>(f: (a: A) => Promise<R>) =>
      async (a: A): Promise<R> => {
        await controller.ready();
        return f(a);
      };
    // Operations are counted as they come back to their callers.
    const counted = async (run: Promise<OperationRecord>): Promise<OperationRecord> => {
      const op = await run;
      metrics.operation(op);
      return op;
    };
    serveControllerApi(
      bus,
      {
        hosts: ready(async (r) => controller.hosts(r)),
        jobs: ready((r) => controller.jobs(r)),
        run: ready((r) => controller.run(r)),
        resolve: ready((r) => controller.resolve(r)),
        adopt: ready((r) => controller.adopt(r)),
        inspect: ready((r) => controller.inspect(r)),
        logs: ready((r) => controller.logs(r)),
        signal: ready((r) => controller.signal(r)),
        stop: ready((r) => controller.stopJob(r)),
        'tty-write': ready((r) => controller.ttyWrite(r)),
        migrate: ready((r) => counted(controller.migrate(r))),
        drain: ready((r) => counted(controller.drain(r))),
        preflight: ready((r) => controller.preflight(r)),
        cordon: ready((r) => controller.cordon(r, true)),
        uncordon: ready((r) => controller.cordon(r, false)),
        'hosts-remove': ready((r) => controller.removeHost(r)),
        ops: (r) => controller.ops(r),
        status: (r) => controller.status(r),
        events: (r) => controller.events(r),
        audit: (r) => audit.read(r),
        checkpoint: ready((r) => counted(controller.checkpoint(r))),
        restore: ready((r) => counted(controller.restore(r))),
        'images-list': (r) => controller.imagesList(r),
        'images-inspect': (r) => controller.imagesInspect(r),
        'images-delete': (r) => controller.imagesDelete(r),
        'images-decode': ready((r) => controller.imagesDecode(r)),
        'jobs-remove': ready((r) => controller.removeJobs(r)),
        'jobs-prune': ready(() => controller.pruneJobs()),
      },
      log,
      audit.hook,
    );
    let metricsServer: MetricsServer | null = null;
    if (config.metricsAddr !== undefined) {
      try {
        metricsServer = await serveMetrics(metrics.metrics, config.metricsAddr, log);
      } catch (err) {
        keeper.stop();
        controller.stop();
        await lease.release().catch(() => undefined);
        throw err;
      }
    }
    await bus.flush();
    // Heartbeats first (a drain being resumed needs to know the hosts), then unfinished work.
    setTimeout(
      () =>
        void controller
          .ready()
          .then(() => controller.resumeOperations())
          .catch((err: unknown) => log.error('cannot resume unfinished operations', { err })),
      Math.min(3000, config.unreachableAfterMs),
    ).unref();
    log.info('controller acting', { id: config.id });
    return {
      controller,
      bus,
      metricsUrl: metricsServer?.url ?? null,
      async close() {
        await metricsServer?.close();
        keeper.stop();
        controller.stop();
        await lease?.release().catch(() => undefined);
        await bus.close();
      },
    };
  } catch (err) {
    await bus.close();
    throw err;
  }
}

/** Retry `open` while JetStream says its cluster cannot place replicas yet (it is forming). */
function whileForming<T>(open: () => Promise<T>): Promise<T> {
  return retry(open, {
    forMs: 30_000,
    pauseMs: () => 500,
    retryIf: (err) => /no suitable peers|insufficient resources/i.test(String(err)),
  });
}
