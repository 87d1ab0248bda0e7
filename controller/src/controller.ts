/**
 * The controller: learns hosts from heartbeats, places and migrates jobs, keeps cordons and
 * operations in JetStream, and serves the `drover` CLI on `drover.ctl.<op>`.
 */
import {
  AgentClient,
  type Bus,
  type EventLog,
  type ObjectFiles,
  type StateStore,
} from '@drover/bus';
import { DroverError, ErrorCode, newId, nullLogger, type Logger } from '@drover/common';
import {
  HEARTBEAT_WILDCARD,
  pageOf,
  type AgentInfo,
  type AgentOp,
  type AgentReplies,
  type AgentRequest,
  type ClusterJob,
  type ControllerReplies,
  type ControllerRequest,
  type HostStatus,
  type ImageSet,
  type OperationRecord,
} from '@drover/protocol';
import { checkpointCluster } from './cluster-checkpoint.js';
import type { ClusterContext } from './cluster-context.js';
import { restoreCluster } from './cluster-restore.js';
import { deleteSet, readSet, setsPage } from './image-sets.js';
import type { ControllerMetrics } from './controller-metrics.js';
import { HostRegistry } from './host-registry.js';
import { KnownHosts, type KnownHost } from './known-hosts.js';
import { Liveness, PROBE_TIMEOUT_MS } from './liveness.js';
import { locate, whereIs, type Locator } from './locate.js';
import { removeHost } from './host-removal.js';
import { allJobs, jobsPage, type JobsSource } from './listing.js';
import { runMigrate } from './migrate-op.js';
import { newOperation, newestOperations, readOperation } from './op-record.js';
import {
  clusterContext,
  drainContext,
  migrateContext,
  resumeOperations,
  type OperationsHost,
} from './operations.js';
import { AddressBook, type AddressRecord, type NameRecord } from './address-book.js';
import { knownHost, silentHosts, toStatus, usableHost } from './host-access.js';
import { JobAddresses } from './job-addresses.js';
import type { JobNetworkConfig } from './config.js';
import { drainHost } from './drain.js';
import { eventsPage } from './event-history.js';
import { decodeSetImage } from './image-decode.js';
import {
  allRecords,
  currentJobs,
  pruneJobs,
  removeJobs,
  type RecordsAccess,
} from './job-records.js';
import { pickHost, place, type HostView } from './placement.js';

/** Durable state of the controller, in JetStream key-value buckets. */
export interface ControllerStores {
  /** History: every agent event (`drover.evt.>`), captured by a JetStream stream. */
  events: EventLog;
  /** host → its cordon (the durable part of a host's state). */
  cordons: StateStore<{ cordoned: boolean }>;
  /** opId → the operation's record. */
  ops: StateStore<OperationRecord>;
  /** image-set name → its record (jobs, files, checksums). */
  sets: StateStore<ImageSet>;
  /** The images of every set: `<set>/<job>/<file>`, sealed. */
  objects: ObjectFiles;
  /** image-set name → its key. */
  keys: StateStore<{ key: string }>;
  /** host → when a controller last wrote it down: the hosts a new controller waits to hear from. */
  hosts: StateStore<KnownHost>;
  /** The job network's addresses and names in use (address-book.ts). */
  addresses: StateStore<AddressRecord>;
  names: StateStore<NameRecord>;
}

/** Calls longer than this are watched: they fail as soon as their agent is seen to die. */
const WATCHED_CALL_MS = 30_000;
/** How often the image store is swept of chunks no object refers to. */
const ORPHAN_SWEEP_MS = 10 * 60_000;

/** One controller's view and actions. */
export class Controller {
  readonly registry: HostRegistry;
  private readonly log: Logger;
  private stopHeartbeats: (() => void) | null = null;
  private readonly liveness: Liveness;
  private known: KnownHosts | null = null;
  private orphanSweeper: NodeJS.Timeout | null = null;
  private readonly unreachableAfterMs: number;
  private readonly imageRetention: number;
  private readonly dumpsPerHost: number | undefined;
  private readonly metrics: ControllerMetrics | null;
  private readonly addresses: JobAddresses;

  constructor(
    private readonly bus: Bus,
    private readonly stores: ControllerStores,
    options: {
      unreachableAfterMs: number;
      imageRetention?: number;
      dumpsPerHost?: number;
      logger?: Logger;
      metrics?: ControllerMetrics;
      jobNetwork?: JobNetworkConfig | null;
    },
  ) {
    this.metrics = options.metrics ?? null;
    this.imageRetention = options.imageRetention ?? 10;
    this.dumpsPerHost = options.dumpsPerHost;
    this.unreachableAfterMs = options.unreachableAfterMs;
    this.registry = new HostRegistry({ unreachableAfterMs: options.unreachableAfterMs });
    this.log = (options.logger ?? nullLogger).child({ component: 'controller' });
    this.liveness = new Liveness(bus, this.registry, options.unreachableAfterMs, this.log);
    this.addresses = new JobAddresses(
      new AddressBook(stores.addresses, stores.names, options.jobNetwork ?? null, this.log),
      this.registry,
      stores.sets,
      (host, op, req, timeoutMs) => this.agent(host, op, req, timeoutMs),
      this.log,
    );
  }

  /**
   * Start listening to heartbeats and sweeping for silent hosts. The controller is ready (see
   * `ready`) once it has heard from every host the cluster has, or waited out the silent ones.
   */
  async start(): Promise<void> {
    this.known = await KnownHosts.load(this.stores.hosts, this.unreachableAfterMs, this.log);
    this.stopHeartbeats = this.bus.subscribe(HEARTBEAT_WILDCARD, (_s, v) =>
      this.heartbeat(v as AgentInfo),
    );
    // Silent hosts are probed before they are called unreachable (liveness.ts).
    this.liveness.start();
    // Chunks of uploads that were cut off (an agent may not purge them itself) are removed.
    this.orphanSweeper = setInterval(() => {
      void this.stores.objects.sweepOrphanChunks().then(
        (n) => n > 0 && this.log.info('removed chunks of interrupted uploads', { subjects: n }),
        (err: unknown) => this.log.warn('cannot sweep the image store', { err }),
      );
    }, ORPHAN_SWEEP_MS);
    this.orphanSweeper.unref();
    this.addresses.start();
  }

  /**
   * Resolves once the controller has heard from every host the cluster has (or waited out the
   * silent ones): what it says about hosts and jobs before then could be wrong.
   */
  ready(): Promise<void> {
    return this.known?.whenReady() ?? Promise.reject(new Error('controller not started'));
  }

  stop(): void {
    if (this.orphanSweeper) clearInterval(this.orphanSweeper);
    this.known?.stop();
    this.stopHeartbeats?.();
    this.liveness.stop();
    this.addresses.stop();
  }

  private heartbeat(info: AgentInfo): void {
    const known = this.registry.get(info.host) !== undefined;
    this.registry.observe(info);
    this.known?.heardFrom(info.host);
    if (!known) {
      this.log.info('host joined', { host: info.host });
      void this.addresses.publishNames(info.host);
      // Its cordon survives controller restarts: read it back.
      void this.stores.cordons.get(info.host).then(
        (c) => {
          if (c?.value.cordoned) this.registry.cordon(info.host);
        },
        (err: unknown) => this.log.warn('cannot read cordon', { host: info.host, err }),
      );
    }
  }

  /** Hosts by name, a page at a time. */
  hosts(req: ControllerRequest<'hosts'> = {}): ControllerReplies['hosts'] {
    const p = pageOf(this.registry.list().map(toStatus), (h) => h.host, req);
    const silent = this.silentHosts();
    return { hosts: p.items, next: p.next, ...(silent.length ? { unanswered: silent } : {}) };
  }

  /** Unreachable hosts (of `only`, or all), as lists name them (host-access.ts). */
  private silentHosts(only?: ReadonlySet<string>): string[] {
    return silentHosts(this.registry, this.known, only);
  }

  /**
   * Jobs of every reachable host (or one), asked of the agents themselves, a page at a time:
   * each live job once, where it lives now; with `all`, every record (ended jobs, and the hosts a
   * job moved away from).
   */
  async jobs(req: ControllerRequest<'jobs'>): Promise<ControllerReplies['jobs']> {
    return jobsPage(this.jobsSource(req.host), req, req.all === true ? allRecords : currentJobs);
  }

  /** The agents to ask for jobs: every reachable host, or `host` (which must be known). */
  private jobsSource(host?: string): JobsSource {
    const hosts = this.registry
      .list()
      .filter((h) => h.reachable && (host === undefined || h.host === host))
      .map((h) => h.host);
    if (host !== undefined && hosts.length === 0) this.knownHost(host);
    const silent = this.silentHosts(host === undefined ? undefined : new Set([host]));
    return { hosts, silent, list: (h, r) => this.agent(h, 'list', r) };
  }

  /** Every job record of the reachable hosts, all pages. */
  private async jobRecords(): Promise<ClusterJob[]> {
    return (await allJobs(this.jobsSource())).jobs;
  }

  /** `jobs rm`: ended jobs' records off every host; refused whole if one still lives. */
  async removeJobs(
    req: ControllerRequest<'jobs-remove'>,
  ): Promise<ControllerReplies['jobs-remove']> {
    return { removed: await removeJobs(this.recordsAccess(), req.jobIds) };
  }

  /** `jobs prune`: every ended job off every reachable host. */
  async pruneJobs(): Promise<ControllerReplies['jobs-prune']> {
    return { removed: await pruneJobs(this.recordsAccess()) };
  }

  private recordsAccess(): RecordsAccess {
    return {
      records: () => this.jobRecords(),
      remove: (host, jobId) => this.agent(host, 'remove', { jobId }),
      log: this.log,
    };
  }

  async run(req: ControllerRequest<'run'>): Promise<ControllerReplies['run']> {
    const { host: wanted, net, address: wantedAddress, ...spec } = req;
    if (net === 'host' && wantedAddress !== undefined) {
      throw new DroverError(
        ErrorCode.InvalidArgument,
        'an address (--ip) is for a job on the job network; --net host jobs have none',
        { details: { address: wantedAddress } },
      );
    }
    const { host, explanation } = await pickHost(
      wanted,
      (h) => this.usableHost(h),
      () =>
        place(this.views(), {
          memoryBytes: spec.memoryLimitBytes ?? 64 * 1024 * 1024,
          cpuFlags: [],
        }),
    );
    if (net === 'host') {
      const job = await this.agent(host, 'run', spec as AgentRequest<'run'>);
      return { ...job, placement: explanation };
    }
    const job = await this.addresses.run(
      host,
      spec.jobId ?? newId('job'),
      spec as AgentRequest<'run'>,
      wantedAddress,
    );
    return { ...job, placement: explanation };
  }

  /** Where the job named `name` is on the job network. */
  async resolve(req: ControllerRequest<'resolve'>): Promise<ControllerReplies['resolve']> {
    const r = await this.addresses.book.resolve(req.name);
    return { name: r.name, address: r.address, jobId: r.jobId };
  }

  async adopt(req: ControllerRequest<'adopt'>): Promise<ClusterJob> {
    await this.usableHost(req.host);
    return this.agent(req.host, 'adopt', { pid: req.pid, ...(req.name ? { name: req.name } : {}) });
  }

  /** A job where it lives, or where it ended (`inspect` of an ended job shows how it ended). */
  async inspect(req: ControllerRequest<'inspect'>): Promise<ControllerReplies['inspect']> {
    const host = await this.locate(req.jobId, true);
    return this.agent(host, 'inspect', req);
  }

  async logs(req: ControllerRequest<'logs'>): Promise<ControllerReplies['logs']> {
    return this.agent(await this.locate(req.jobId, true), 'logs', req);
  }

  async signal(req: ControllerRequest<'signal'>): Promise<ClusterJob> {
    return this.agent(await this.locate(req.jobId), 'signal', req);
  }

  async stopJob(req: ControllerRequest<'stop'>): Promise<ClusterJob> {
    return this.agent(await this.locate(req.jobId), 'signal', {
      jobId: req.jobId,
      signal: 'SIGTERM',
    });
  }

  /** Input for a job's terminal (`drover attach`). */
  async ttyWrite(req: ControllerRequest<'tty-write'>): Promise<ControllerReplies['tty-write']> {
    return this.agent(await this.locate(req.jobId), 'tty-write', req);
  }

  async preflight(req: ControllerRequest<'preflight'>): Promise<ControllerReplies['preflight']> {
    const host = await this.locate(req.jobId);
    if (req.to !== undefined) this.knownHost(req.to);
    return this.agent(host, 'preflight', {
      jobId: req.jobId,
      ...(req.to ? { destination: req.to } : {}),
    });
  }

  async cordon(req: ControllerRequest<'cordon'>, cordoned: boolean): Promise<HostStatus> {
    this.knownHost(req.host);
    await this.stores.cordons.put(req.host, { cordoned });
    return toStatus(cordoned ? this.registry.cordon(req.host) : this.registry.uncordon(req.host));
  }

  /** `hosts rm`: forget a host that left the cluster (host-removal.ts). */
  removeHost(req: ControllerRequest<'hosts-remove'>): Promise<ControllerReplies['hosts-remove']> {
    return removeHost(
      {
        registry: this.registry,
        known: this.known,
        cordons: this.stores.cordons,
        ops: this.stores.ops,
        // The liveness probe (its heartbeat thread) or its main thread: either is an answer.
        answers: (host) =>
          Promise.any([
            this.liveness.probe(host).then((p) => {
              if (!p) throw new Error('no answer to the liveness probe');
            }),
            this.agent(host, 'info', {}, PROBE_TIMEOUT_MS),
          ]).then(
            () => true,
            () => false,
          ),
        log: this.log,
      },
      req,
    );
  }

  /**
   * Move a job: validate everything first (bad input changes nothing), record the operation,
   * ask the source agent to migrate, record the outcome.
   */
  async migrate(req: ControllerRequest<'migrate'>): Promise<OperationRecord> {
    const source = await this.locate(req.jobId);
    if (req.to === source)
      throw new DroverError(
        ErrorCode.InvalidArgument,
        `job ${req.jobId} already runs on ${source}`,
      );
    const { host: destination, explanation } = await pickHost(
      req.to,
      (h) => this.usableHost(h),
      async () => {
        const job = await this.agent(source, 'inspect', { jobId: req.jobId });
        return place(this.views(), {
          memoryBytes: job.memoryUsageBytes ?? 0,
          cpuFlags: this.registry.get(source)?.info.cpuFlags ?? [],
          needsLazyPages: req.mode === 'post-copy',
          exclude: [source],
        });
      },
    );
    const { opId, ...asked } = req;
    return runMigrate(
      migrateContext(this.operationsHost()),
      newOperation('migrate', opId ?? newId('op'), {
        request: { ...asked, source, destination },
        placement: explanation,
      }),
    );
  }

  /** Cordon `host` and move every job off it. */
  async drain(req: ControllerRequest<'drain'>): Promise<OperationRecord> {
    this.knownHost(req.host);
    return drainHost(drainContext(this.operationsHost()), req.host, req.parallel ?? 2);
  }

  /** Checkpoint a set of jobs across hosts as one consistent cut, stored as an image set. */
  checkpoint(req: ControllerRequest<'checkpoint'>): Promise<OperationRecord> {
    return checkpointCluster(this.clusterContext(), req);
  }

  /** Bring an image set back onto hosts; the workload continues from its cut. */
  restore(req: ControllerRequest<'restore'>): Promise<OperationRecord> {
    return restoreCluster(this.clusterContext(), req);
  }

  /** Image sets, newest first, a page at a time (the cursor is a set's name). */
  async imagesList(
    req: ControllerRequest<'images-list'> = {},
  ): Promise<ControllerReplies['images-list']> {
    const page = await setsPage(this.clusterContext(), req);
    // Sets are whole in JetStream; only one still being made waits on its hosts.
    const making = new Set(
      page.sets.filter((s) => s.state === 'creating').flatMap((s) => s.jobs.map((j) => j.host)),
    );
    const silent = making.size ? this.silentHosts(making) : [];
    return { ...page, ...(silent.length ? { unanswered: silent } : {}) };
  }

  imagesInspect(req: ControllerRequest<'images-inspect'>): Promise<ImageSet> {
    return readSet(this.clusterContext(), req.name);
  }

  imagesDelete(
    req: ControllerRequest<'images-delete'>,
  ): Promise<ControllerReplies['images-delete']> {
    return deleteSet(this.clusterContext(), req.name);
  }

  /** Finish the operations a previous controller left running (called once acting). */
  resumeOperations(): Promise<void> {
    return resumeOperations(this.operationsHost());
  }

  /** What the operations use of this controller (operations.ts). */
  private operationsHost(): OperationsHost {
    return {
      ops: this.stores.ops,
      sets: this.stores.sets,
      keys: this.stores.keys,
      objects: this.stores.objects,
      log: this.log,
      imageRetention: this.imageRetention,
      ...(this.dumpsPerHost === undefined ? {} : { dumpsPerHost: this.dumpsPerHost }),
      metrics: this.metrics,
      addresses: this.addresses,
      views: () => this.views(),
      agent: (host, op, req, timeoutMs) => this.agent(host, op, req, timeoutMs),
      whereIs: (jobId) => whereIs(this.locator(), jobId),
      usableHost: async (host) => void (await this.usableHost(host)),
      cordon: async (host) => void (await this.cordon({ host }, true)),
      allJobs: () => this.jobRecords(),
    };
  }

  private clusterContext(): ClusterContext {
    return clusterContext(this.operationsHost());
  }

  private locator(): Locator {
    return {
      hosts: () => this.registry.list(),
      inspect: (host, jobId) => this.agent(host, 'inspect', { jobId }),
    };
  }

  /** Cluster history, oldest first, a page at a time (event-history.ts). */
  events(req: ControllerRequest<'events'>): Promise<ControllerReplies['events']> {
    return eventsPage(this.stores.events, req);
  }

  /** What is inside one job's image of a set (image-decode.ts). */
  imagesDecode(
    req: ControllerRequest<'images-decode'>,
  ): Promise<ControllerReplies['images-decode']> {
    return decodeSetImage(this.clusterContext(), req);
  }

  ops(req: ControllerRequest<'ops'>): Promise<ControllerReplies['ops']> {
    return newestOperations(this.stores.ops, req.limit ?? 50);
  }

  status(req: ControllerRequest<'status'>): Promise<OperationRecord> {
    return readOperation(this.stores.ops, req.opId);
  }

  // ---- helpers ----

  private views(): HostView[] {
    return this.registry.list();
  }

  private knownHost(host: string): HostView {
    return knownHost(this.registry, this.known, host);
  }

  /**
   * A host that may receive work: known, reachable, not cordoned. One marked unreachable is
   * asked directly first (a liveness probe): on a loaded machine its heartbeats and the sweep's
   * probe may both have come late, and work is refused only to a host that does not answer now.
   */
  private async usableHost(host: string): Promise<HostView> {
    await this.liveness.recheck(host);
    return usableHost(this.registry, this.known, host);
  }

  /** The host a job lives on, confirmed by that host's agent (locate.ts). */
  private locate(jobId: string, anyState = false): Promise<string> {
    return locate(this.locator(), jobId, anyState);
  }

  private agent<Op extends AgentOp>(
    host: string,
    op: Op,
    req: AgentRequest<Op>,
    timeoutMs?: number,
  ): Promise<AgentReplies[Op]> {
    const call = new AgentClient(this.bus, host).call(op, req, timeoutMs);
    return timeoutMs !== undefined && timeoutMs > WATCHED_CALL_MS
      ? this.liveness.watch(host, op, call)
      : call;
  }
}
