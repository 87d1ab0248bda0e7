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
import {
  DroverError,
  ErrorCode,
  newId,
  newSecret,
  nullLogger,
  toDroverError,
  type Logger,
} from '@drover/common';
import {
  errorToFailure,
  HEARTBEAT_WILDCARD,
  type AgentInfo,
  type AgentOp,
  type AgentReplies,
  type AgentRequest,
  type ClusterJob,
  type ControllerReplies,
  type ControllerRequest,
  type HostStatus,
  type ImageSet,
  type MigrationMode,
  type MigrationRecord,
  type OperationRecord,
} from '@drover/protocol';
import {
  checkpointCluster,
  deleteSet,
  listSets,
  readSet,
  restoreCluster,
  resumable,
  resumeCluster,
  type ClusterContext,
} from './cluster-checkpoint.js';
import type { ControllerMetrics } from './controller-metrics.js';
import { HostRegistry } from './host-registry.js';
import { AddressBook, type AddressRecord, type NameRecord } from './address-book.js';
import type { JobNetworkConfig } from './config.js';
import { drainHost, runDrain, type DrainContext } from './drain.js';
import { readHistory } from './event-history.js';
import { decodeSetImage } from './image-decode.js';
import {
  allRecords,
  currentJobs,
  latestRecord,
  pruneJobs,
  removeJobs,
  type RecordsAccess,
} from './job-records.js';
import { place, type HostView } from './placement.js';

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
  /** The job network's addresses and names in use (address-book.ts). */
  addresses: StateStore<AddressRecord>;
  names: StateStore<NameRecord>;
}

const LIVE = new Set(['starting', 'running', 'frozen', 'checkpointing', 'migrating']);
/** Calls longer than this are watched: they fail as soon as their agent is seen to die. */
const WATCHED_CALL_MS = 30_000;
/** How far an agent's start (from its heartbeat's uptime) may seem to be after a call's start. */
const AGENT_START_SLACK_MS = 1500;
/** A migration may take long (post-copy of a big job pulls pages after the switch). */
const MIGRATE_TIMEOUT_MS = 15 * 60_000;
/** How long one agent may take to take the table of names. */
const NAMES_TIMEOUT_MS = 5000;
/** How often addresses and names of ended jobs are looked for and released. */
const RECONCILE_MS = 15_000;
/** Agent refusals after which nothing was started (the reservation can go back at once). */
const REFUSED = new Set<string>([
  ErrorCode.InvalidArgument,
  ErrorCode.FailedPrecondition,
  ErrorCode.AlreadyExists,
  ErrorCode.NotFound,
  ErrorCode.PermissionDenied,
]);

/** One controller's view and actions. */
export class Controller {
  readonly registry: HostRegistry;
  private readonly log: Logger;
  private stopHeartbeats: (() => void) | null = null;
  private sweeper: NodeJS.Timeout | null = null;
  private reconciler: NodeJS.Timeout | null = null;
  private readonly imageRetention: number;
  private readonly unreachableAfterMs: number;
  private readonly metrics: ControllerMetrics | null;
  readonly addresses: AddressBook;
  /** Name tables go out one at a time, in order: the last one sent is the newest. */
  private namesSent: Promise<void> = Promise.resolve();

  constructor(
    private readonly bus: Bus,
    private readonly stores: ControllerStores,
    options: {
      unreachableAfterMs: number;
      imageRetention?: number;
      logger?: Logger;
      metrics?: ControllerMetrics;
      jobNetwork?: JobNetworkConfig | null;
    },
  ) {
    this.metrics = options.metrics ?? null;
    this.imageRetention = options.imageRetention ?? 10;
    this.unreachableAfterMs = options.unreachableAfterMs;
    this.registry = new HostRegistry({ unreachableAfterMs: options.unreachableAfterMs });
    this.log = (options.logger ?? nullLogger).child({ component: 'controller' });
    this.addresses = new AddressBook(
      stores.addresses,
      stores.names,
      options.jobNetwork ?? null,
      this.log,
    );
  }

  /** Start listening to heartbeats and sweeping for silent hosts. */
  async start(): Promise<void> {
    this.stopHeartbeats = this.bus.subscribe(HEARTBEAT_WILDCARD, (_s, v) =>
      this.heartbeat(v as AgentInfo),
    );
    this.sweeper = setInterval(() => {
      for (const h of this.registry.sweep()) this.log.warn('host unreachable', { host: h });
    }, 1000);
    this.sweeper.unref();
    this.reconciler = setInterval(() => void this.reconcileAddresses(), RECONCILE_MS);
    this.reconciler.unref();
  }

  stop(): void {
    this.stopHeartbeats?.();
    if (this.sweeper) clearInterval(this.sweeper);
    if (this.reconciler) clearInterval(this.reconciler);
  }

  /**
   * Release the addresses and names of jobs that ended for good (address-book.ts); tell the
   * agents when names went. Errors are logged: the next round tries again.
   */
  async reconcileAddresses(): Promise<string[]> {
    try {
      const listedFromMs = Date.now();
      const hosts = this.registry.list();
      let allHostsReachable = hosts.every((h) => h.reachable);
      const jobs: ClusterJob[] = [];
      for (const h of hosts.filter((x) => x.reachable)) {
        const got = await this.agent(h.host, 'list', {}).catch(() => null);
        if (got === null) allHostsReachable = false;
        else jobs.push(...got.jobs);
      }
      const inImageSets = new Set(
        [...(await this.stores.sets.list()).values()].flatMap((v) =>
          v.value.jobs.map((j) => j.jobId),
        ),
      );
      const released = await this.addresses.reconcile({
        jobs,
        allHostsReachable,
        inImageSets,
        listedFromMs,
      });
      if (released.length) await this.publishNames();
      return released;
    } catch (err) {
      this.log.warn('cannot reconcile job addresses', { err });
      return [];
    }
  }

  /**
   * Send every reachable agent the table of named jobs (for its jobs' /etc/hosts). Resolves once
   * sent (failures are logged: the next change, or the host's next join, sends it again).
   */
  publishNames(only?: string): Promise<void> {
    this.namesSent = this.namesSent
      .then(async () => {
        const names = await this.addresses.table();
        const hosts = this.registry
          .list()
          .filter((h) => h.reachable && (only === undefined || h.host === only));
        await Promise.all(
          hosts.map((h) =>
            this.agent(h.host, 'names-set', { names }, NAMES_TIMEOUT_MS).catch((err: unknown) =>
              this.log.warn('cannot send names', { host: h.host, err }),
            ),
          ),
        );
      })
      .catch((err: unknown) => this.log.warn('cannot send names', { err }));
    return this.namesSent;
  }

  private heartbeat(info: AgentInfo): void {
    const known = this.registry.get(info.host) !== undefined;
    this.registry.observe(info);
    if (!known) {
      this.log.info('host joined', { host: info.host });
      void this.publishNames(info.host);
      // Its cordon survives controller restarts: read it back.
      void this.stores.cordons.get(info.host).then(
        (c) => {
          if (c?.value.cordoned) this.registry.cordon(info.host);
        },
        (err: unknown) => this.log.warn('cannot read cordon', { host: info.host, err }),
      );
    }
  }

  hosts(): ControllerReplies['hosts'] {
    return { hosts: this.registry.list().map(toStatus) };
  }

  /**
   * The jobs of every reachable host, asked of the agents themselves: each live job once, where
   * it lives now; with `all`, every record (ended jobs, and the hosts a job moved away from).
   */
  async jobs(req: ControllerRequest<'jobs'>): Promise<ControllerReplies['jobs']> {
    const records = await this.jobRecords(req.host);
    return { jobs: req.all === true ? allRecords(records) : currentJobs(records) };
  }

  /** Every job record of the reachable hosts (of `host` only, when given). */
  private async jobRecords(host?: string): Promise<ClusterJob[]> {
    const hosts = this.registry
      .list()
      .filter((h) => h.reachable && (host === undefined || h.host === host));
    if (host !== undefined && hosts.length === 0) this.knownHost(host);
    const lists = await Promise.all(
      hosts.map((h) =>
        this.agent(h.host, 'list', {}).then(
          (r) => r.jobs,
          () => [],
        ),
      ),
    );
    return lists.flat();
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
    let host: string;
    let explanation: string;
    if (wanted !== undefined) {
      this.usableHost(wanted);
      host = wanted;
      explanation = `${wanted}: asked for`;
    } else {
      const p = place(this.views(), {
        memoryBytes: spec.memoryLimitBytes ?? 64 * 1024 * 1024,
        cpuFlags: [],
      });
      host = p.host;
      explanation = p.explanation;
    }
    if (net === 'host') {
      const job = await this.agent(host, 'run', spec as AgentRequest<'run'>);
      return { ...job, placement: explanation };
    }
    const jobId = spec.jobId ?? newId('job');
    // An automatic address that something outside Drover answers for is skipped (a few times).
    for (let attempt = 0; ; attempt++) {
      const network = await this.addresses.reserve(jobId, spec.name ?? null, wantedAddress);
      try {
        const job = await this.agent(host, 'run', {
          ...(spec as AgentRequest<'run'>),
          jobId,
          network,
        });
        await this.addresses.confirm(network.address, jobId);
        // Once run returns, every job can resolve the new name.
        if (spec.name !== undefined) await this.publishNames();
        return { ...job, placement: explanation };
      } catch (err) {
        const e = toDroverError(err);
        const inUse =
          e.code === ErrorCode.AlreadyExists && e.details['reason'] === 'address-in-use';
        if (inUse && wantedAddress === undefined && attempt < 3) {
          this.log.warn('address answered on the segment; trying another', {
            address: network.address,
            details: e.details,
          });
          await this.addresses.markForeign(network.address, jobId);
          continue;
        }
        // Refused by the agent: nothing started. Otherwise the outcome is unknown and the
        // reservation stays until reconciling finds the job (or finds it gone).
        if (REFUSED.has(e.code)) await this.addresses.release(network.address, jobId);
        throw e;
      }
    }
  }

  /** Where the job named `name` is on the job network. */
  async resolve(req: ControllerRequest<'resolve'>): Promise<ControllerReplies['resolve']> {
    const r = await this.addresses.resolve(req.name);
    return { name: r.name, address: r.address, jobId: r.jobId };
  }

  async adopt(req: ControllerRequest<'adopt'>): Promise<ClusterJob> {
    this.usableHost(req.host);
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

  /**
   * Move a job: validate everything first (bad input changes nothing), record the operation,
   * ask the source agent to migrate, record the outcome.
   */
  async migrate(req: ControllerRequest<'migrate'>): Promise<OperationRecord> {
    const source = await this.locate(req.jobId);
    let destination: string;
    let explanation: string;
    if (req.to !== undefined) {
      if (req.to === source)
        throw new DroverError(
          ErrorCode.InvalidArgument,
          `job ${req.jobId} already runs on ${source}`,
        );
      this.usableHost(req.to);
      destination = req.to;
      explanation = `${req.to}: asked for`;
    } else {
      const job = await this.agent(source, 'inspect', { jobId: req.jobId });
      const p = place(this.views(), {
        memoryBytes: job.memoryUsageBytes ?? 0,
        cpuFlags: this.registry.get(source)?.info.cpuFlags ?? [],
        needsLazyPages: req.mode === 'post-copy',
        exclude: [source],
      });
      destination = p.host;
      explanation = p.explanation;
    }
    const now = new Date().toISOString();
    const op: OperationRecord = {
      opId: newId('op'),
      kind: 'migrate',
      state: 'running',
      createdAt: now,
      updatedAt: now,
      request: { ...req, source, destination },
      placement: explanation,
      migration: null,
      error: null,
    };
    await this.stores.ops.put(op.opId, op);
    const { record, error } = await this.authorizedMigrate(
      source,
      req.jobId,
      destination,
      req.mode,
    );
    // A failed migration's record too: its phases and CRIU's error lines.
    op.migration = record;
    op.state = error ? 'failed' : 'done';
    // In full: the cause chain and what went wrong while rolling back.
    if (error) op.error = errorToFailure(error);
    op.updatedAt = new Date().toISOString();
    await this.stores.ops.put(op.opId, op);
    return op;
  }

  /** Cordon `host` and move every job off it. */
  async drain(req: ControllerRequest<'drain'>): Promise<OperationRecord> {
    this.knownHost(req.host);
    return drainHost(this.drainContext(), req.host, req.parallel ?? 2);
  }

  /** Checkpoint a set of jobs across hosts as one consistent cut, stored as an image set. */
  checkpoint(req: ControllerRequest<'checkpoint'>): Promise<OperationRecord> {
    return checkpointCluster(this.clusterContext(), req);
  }

  /** Bring an image set back onto hosts; the workload continues from its cut. */
  restore(req: ControllerRequest<'restore'>): Promise<OperationRecord> {
    return restoreCluster(this.clusterContext(), req);
  }

  async imagesList(): Promise<ControllerReplies['images-list']> {
    return { sets: await listSets(this.clusterContext()) };
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
  async resumeOperations(): Promise<void> {
    const ops = [...(await this.stores.ops.list()).values()].map((v) => v.value);
    for (const op of ops.filter((o) => o.kind === 'drain' && o.state === 'running')) {
      this.log.info('resuming drain', { opId: op.opId, host: op.host });
      void runDrain(this.drainContext(), op.opId, Number(op.request['parallel'] ?? 2)).catch(
        (err: unknown) => this.log.error('resumed drain failed', { opId: op.opId, err }),
      );
    }
    for (const op of ops.filter(resumable)) {
      this.log.info(`resuming ${op.kind}`, { opId: op.opId, set: op.imageSet, phase: op.phase });
      void resumeCluster(this.clusterContext(), op).catch((err: unknown) =>
        this.log.error(`resumed ${op.kind} failed`, { opId: op.opId, err }),
      );
    }
  }

  private clusterContext(): ClusterContext {
    return {
      ops: this.stores.ops,
      sets: this.stores.sets,
      keys: this.stores.keys,
      objects: this.stores.objects,
      log: this.log,
      retention: this.imageRetention,
      hosts: () => this.views(),
      agent: (host, op, req, timeoutMs) => this.agent(host, op, req, timeoutMs),
      whereIs: (jobId) => this.whereIs(jobId),
      allJobs: async () => (await this.jobs({})).jobs,
      usableHost: (host) => void this.usableHost(host),
      claimAddress: async (jobId, name, network) => {
        await this.addresses.claim(jobId, name, network);
        if (name !== null && network.mode === 'job') await this.publishNames();
      },
    };
  }

  /** Where a job's processes are now, asked of every reachable agent (null: nowhere). */
  private async whereIs(jobId: string): Promise<{ host: string; state: string } | null> {
    for (const h of this.registry.list().filter((x) => x.reachable)) {
      const j = await this.agent(h.host, 'inspect', { jobId }).catch(() => null);
      if (j && LIVE.has(j.state)) return { host: h.host, state: j.state };
    }
    return null;
  }

  private drainContext(): DrainContext {
    return {
      ops: this.stores.ops,
      log: this.log,
      hosts: () => this.views(),
      cordon: async (host) => void (await this.cordon({ host }, true)),
      jobsOn: async (host) => {
        const { jobs } = await this.agent(host, 'list', {});
        const live = jobs.filter((j) => LIVE.has(j.state));
        return Promise.all(
          live.map(async (j) => ({
            id: j.id,
            name: j.name,
            memoryBytes:
              (await this.agent(host, 'inspect', { jobId: j.id }).catch(() => null))
                ?.memoryUsageBytes ?? 0,
          })),
        );
      },
      whereIs: (jobId) => this.whereIs(jobId),
      blockers: async (host, jobId) => {
        const r = await this.agent(host, 'preflight', { jobId });
        return r.reasons.map((x) => `${x.code}: ${x.message}`);
      },
      migrate: async (source, jobId, destination) => {
        const { record, error } = await this.authorizedMigrate(source, jobId, destination);
        if (error) throw error;
        return { migrationId: record!.migrationId, frozenMs: record!.stats.frozenMs };
      },
    };
  }

  /**
   * Cluster history, oldest first: after `sinceSeq` (to page on), or the `newest`; progress
   * ticks folded with `fold` (event-history.ts).
   */
  async events(req: ControllerRequest<'events'>): Promise<ControllerReplies['events']> {
    return {
      events: await readHistory(this.stores.events, {
        limit: req.limit ?? 100,
        ...(req.sinceSeq !== undefined ? { sinceSeq: req.sinceSeq } : {}),
        ...(req.host !== undefined ? { subjectFilter: `drover.evt.${req.host}.>` } : {}),
        ...(req.newest !== undefined ? { newest: req.newest } : {}),
        ...(req.fold !== undefined ? { fold: req.fold } : {}),
      }),
    };
  }

  /** What is inside one job's image of a set (image-decode.ts). */
  imagesDecode(
    req: ControllerRequest<'images-decode'>,
  ): Promise<ControllerReplies['images-decode']> {
    return decodeSetImage(this.clusterContext(), req);
  }

  async ops(req: ControllerRequest<'ops'>): Promise<ControllerReplies['ops']> {
    const all = [...(await this.stores.ops.list()).values()].map((v) => v.value);
    all.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
    return { ops: all.slice(0, req.limit ?? 50) };
  }

  async status(req: ControllerRequest<'status'>): Promise<OperationRecord> {
    const r = await this.stores.ops.get(req.opId);
    if (!r)
      throw new DroverError(ErrorCode.NotFound, `no operation ${req.opId}`, {
        details: { opId: req.opId },
      });
    return r.value;
  }

  // ---- helpers ----

  /**
   * Authorize the migration on the destination with a fresh ticket, then ask the source to
   * migrate with it: a destination takes only migrations the controller allowed (an agent
   * cannot push a job onto a peer by itself). A failed migration comes back with the source's
   * record of it when there is one (its phases, CRIU's error lines), found by the same ticket.
   */
  private async authorizedMigrate(
    source: string,
    jobId: string,
    destination: string,
    mode?: MigrationMode,
  ): Promise<{ record: MigrationRecord | null; error: DroverError | null }> {
    const ticket = newSecret();
    try {
      await this.agent(destination, 'migrate-authorize', { jobId, source, ticket });
      const record = await this.agent(
        source,
        'migrate',
        { jobId, destination, ticket, ...(mode ? { mode } : {}) },
        MIGRATE_TIMEOUT_MS,
      );
      this.metrics?.migration('done', record, mode);
      return { record, error: null };
    } catch (err) {
      const error = toDroverError(err);
      const record = await this.agent(source, 'migrate-find', { jobId, ticket }, 10_000).catch(
        () => null,
      );
      // Refused before anything was frozen (preflight, capacity, a mode the hosts lack).
      const refused = error.code === ErrorCode.FailedPrecondition && record === null;
      this.metrics?.migration(refused ? 'refused' : 'failed', record, mode);
      this.log.warn('migration failed', { jobId, source, destination, err: error });
      return { record, error };
    }
  }

  private views(): HostView[] {
    return this.registry.list();
  }

  private knownHost(host: string): HostView {
    const h = this.registry.get(host);
    if (!h) {
      throw new DroverError(
        ErrorCode.NotFound,
        `no host ${host} (known: ${
          this.registry
            .list()
            .map((x) => x.host)
            .join(', ') || 'none'
        })`,
        {
          details: { host },
        },
      );
    }
    return h;
  }

  /** A host that may receive work: known, reachable, not cordoned. */
  private usableHost(host: string): HostView {
    const h = this.knownHost(host);
    if (!h.reachable) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `host ${host} is unreachable (no heartbeat lately)`,
        { details: { host } },
      );
    }
    if (h.cordoned) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `host ${host} is cordoned; uncordon it first`,
        { details: { host } },
      );
    }
    return h;
  }

  /**
   * The host a job lives on, confirmed by that host's agent (heartbeats may be a moment old: a
   * job that just migrated still shows on its old host). Hosts whose heartbeat lists the job are
   * asked first, then every other reachable host.
   */
  private async locate(jobId: string, anyState = false): Promise<string> {
    const reachable = this.registry.list().filter((h) => h.reachable);
    const listed = reachable.filter((h) => h.info.jobs.some((j) => j.id === jobId));
    const order = [...listed, ...reachable.filter((h) => !listed.includes(h))];
    const ended: ClusterJob[] = [];
    for (const h of order) {
      const found = await this.agent(h.host, 'inspect', { jobId }).then(
        (j) => j,
        () => null,
      );
      if (!found) continue;
      if (LIVE.has(found.state)) return h.host;
      ended.push(found);
    }
    // Ended: where it ended (its last hop), not a host it moved away from.
    const last = latestRecord(ended);
    if (anyState && last !== null) return last.host;
    if (last !== null) {
      // It exists but does not run: refused by its state, as its agent would refuse it.
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `job ${jobId} is not running (it is ${last.state} on ${last.host})`,
        { details: { jobId, state: last.state, host: last.host } },
      );
    }
    throw new DroverError(ErrorCode.NotFound, `no running job ${jobId} on any reachable host`, {
      details: { jobId },
    });
  }

  private agent<Op extends AgentOp>(
    host: string,
    op: Op,
    req: AgentRequest<Op>,
    timeoutMs?: number,
  ): Promise<AgentReplies[Op]> {
    const call = new AgentClient(this.bus, host).call(op, req, timeoutMs);
    return timeoutMs !== undefined && timeoutMs > WATCHED_CALL_MS
      ? this.whileAgentLives(host, op, call)
      : call;
  }

  /**
   * A long call (a migration, a dump, an upload) fails as soon as its agent is seen to die — no
   * heartbeat for the unreachable timeout, or a heartbeat from a restarted agent — rather than
   * when its timeout (minutes) runs out: a dead agent never replies.
   */
  private whileAgentLives<T>(host: string, op: string, call: Promise<T>): Promise<T> {
    const callStart = Date.now();
    return new Promise<T>((resolve, reject) => {
      const gone = (why: string): void => {
        clearInterval(timer);
        reject(
          new DroverError(ErrorCode.Unavailable, `the agent on ${host} ${why} during ${op}`, {
            retryable: true,
            details: { host, op },
          }),
        );
      };
      const timer = setInterval(() => {
        const h = this.registry.get(host);
        if (!h) return;
        // Silence counts from the call's start: a host that was silent before (an agent being
        // restarted) is judged on the heartbeats it sends while the call runs.
        const silentMs = Date.now() - Math.max(h.lastSeenMs, callStart);
        if (silentMs > this.unreachableAfterMs) return gone('stopped answering (no heartbeat)');
        // An agent that started after the call went out cannot be the one running it. (Its start
        // is known to a second: uptime is whole seconds; heartbeats are a moment late.)
        const agentStart = h.lastSeenMs - h.info.uptimeSec * 1000;
        if (agentStart > callStart + AGENT_START_SLACK_MS) gone('restarted');
      }, 500);
      call.then(
        (v) => {
          clearInterval(timer);
          resolve(v);
        },
        (err: unknown) => {
          clearInterval(timer);
          reject(err as Error);
        },
      );
    });
  }
}

function toStatus(h: HostView): HostStatus {
  return {
    host: h.host,
    reachable: h.reachable,
    cordoned: h.cordoned,
    lastSeen: new Date(h.lastSeenMs).toISOString(),
    info: h.info,
  };
}
