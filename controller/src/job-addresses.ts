/**
 * The controller's side of the job network (address-book.ts holds the records): a job started
 * with an address reserved for it, the table of names sent to every agent (for its jobs'
 * /etc/hosts), and the periodic release of what ended jobs held.
 */
import type { StateStore } from '@drover/bus';
import { ErrorCode, toDroverError, type Logger } from '@drover/common';
import type { AgentRequest, ClusterJob, ImageSet } from '@drover/protocol';
import type { AddressBook } from './address-book.js';
import type { AgentCall } from './host-access.js';
import type { HostRegistry } from './host-registry.js';
import { jobsOfHost } from './listing.js';

/** How one agent may take to take the table of names. */
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

/** Addresses and names of jobs, kept in step with the agents. */
export class JobAddresses {
  private reconciler: NodeJS.Timeout | null = null;
  /** Name tables go out one at a time, in order: the last one sent is the newest. */
  private namesSent: Promise<void> = Promise.resolve();

  constructor(
    readonly book: AddressBook,
    private readonly registry: HostRegistry,
    private readonly sets: Pick<StateStore<ImageSet>, 'list'>,
    private readonly agent: AgentCall,
    private readonly log: Logger,
  ) {}

  /** Release what ended jobs held every RECONCILE_MS (errors are logged; the next round retries). */
  start(): void {
    this.reconciler = setInterval(() => void this.reconcile(), RECONCILE_MS);
    this.reconciler.unref();
  }

  stop(): void {
    if (this.reconciler) clearInterval(this.reconciler);
  }

  /**
   * Release the addresses and names of jobs that ended for good (address-book.ts); tell the
   * agents when names went. Errors are logged: the next round tries again.
   */
  async reconcile(): Promise<string[]> {
    try {
      const listedFromMs = Date.now();
      const hosts = this.registry.list();
      let allHostsReachable = hosts.every((h) => h.reachable);
      const jobs: ClusterJob[] = [];
      for (const h of hosts.filter((x) => x.reachable)) {
        const got = await jobsOfHost((r) => this.agent(h.host, 'list', r)).catch(() => null);
        if (got === null) allHostsReachable = false;
        else jobs.push(...got);
      }
      const inImageSets = new Set(
        [...(await this.sets.list()).values()].flatMap((v) => v.value.jobs.map((j) => j.jobId)),
      );
      const released = await this.book.reconcile({
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
   * Send every reachable agent (or `only` that host) the table of named jobs. Resolves once sent
   * (failures are logged: the next change, or the host's next join, sends it again).
   */
  publishNames(only?: string): Promise<void> {
    this.namesSent = this.namesSent
      .then(async () => {
        const names = await this.book.table();
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

  /**
   * Run a job on `host` with an address of the job network reserved for it (`wanted`, or the
   * next free one). An automatic address that something outside Drover answers for is skipped
   * (a few times).
   */
  async run(
    host: string,
    jobId: string,
    spec: AgentRequest<'run'>,
    wanted: string | undefined,
  ): Promise<ClusterJob> {
    for (let attempt = 0; ; attempt++) {
      const network = await this.book.reserve(jobId, spec.name ?? null, wanted);
      try {
        const job = await this.agent(host, 'run', { ...spec, jobId, network });
        await this.book.confirm(network.address, jobId);
        // Once run returns, every job can resolve the new name.
        if (spec.name !== undefined) await this.publishNames();
        return job;
      } catch (err) {
        const e = toDroverError(err);
        const inUse =
          e.code === ErrorCode.AlreadyExists && e.details['reason'] === 'address-in-use';
        if (inUse && wanted === undefined && attempt < 3) {
          this.log.warn('address answered on the segment; trying another', {
            address: network.address,
            details: e.details,
          });
          await this.book.markForeign(network.address, jobId);
          continue;
        }
        // Refused by the agent: nothing started. Otherwise the outcome is unknown and the
        // reservation stays until reconciling finds the job (or finds it gone).
        if (REFUSED.has(e.code)) await this.book.release(network.address, jobId);
        throw e;
      }
    }
  }
}
