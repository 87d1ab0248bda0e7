/**
 * The job network's addresses and names. Addresses come from the configured job subnet and are
 * persisted in JetStream (`drover_addresses`, one key per address, made by compare-and-set
 * create, so no address is ever handed out twice); names (`drover run --name`) likewise in
 * `drover_names`. Both are released only once the job holding them has ended for good and no
 * image set can bring it back (`reconcile`).
 */
import type { StateStore } from '@drover/bus';
import { DroverError, ErrorCode, isDroverError, type Logger } from '@drover/common';
import { intToIpv4, ipv4ToInt, type ClusterJob, type JobNetwork } from '@drover/protocol';
import type { JobNetworkConfig } from './config.js';

/** One address of the job subnet that is not free. */
export interface AddressRecord {
  address: string;
  /** The job holding it (empty for a foreign address). */
  jobId: string;
  /**
   * `reserved`: handed to a job being started; `assigned`: the job exists; `foreign`: something
   * outside Drover answered for it on the segment (skipped until `recheckAfter`).
   */
  state: 'reserved' | 'assigned' | 'foreign';
  since: string;
  recheckAfter?: string;
}

/** A job's name and where it is. */
export interface NameRecord {
  name: string;
  jobId: string;
  address: string;
  since?: string;
}

/** What reconciling needs to know about the cluster right now. */
export interface ClusterView {
  /** Every job record of every reachable host (past hops included). */
  jobs: readonly ClusterJob[];
  /** False while some host is unreachable: its jobs are unknown, nothing is released. */
  allHostsReachable: boolean;
  /** Jobs that an image set holds (a restore brings them back with their addresses). */
  inImageSets: ReadonlySet<string>;
  /** When the listing of jobs began (epoch ms; default: now). */
  listedFromMs?: number;
}

/** What the book needs of a JetStream key-value bucket (a StateStore; tests pass a fake). */
export type AddressStore<T> = Pick<
  StateStore<T>,
  'get' | 'create' | 'mutate' | 'delete' | 'list' | 'keys'
>;

/**
 * A record this young is never released: its `run` may still be in progress, or its job may have
 * started after the cluster's jobs were listed (a reconcile's view is not a snapshot).
 */
const GRACE_MS = 2 * 60_000;
/** A foreign address is probed again after this long. */
const FOREIGN_RECHECK_MS = 10 * 60_000;
/** Job states after which a job will never run again by itself. */
const ENDED = new Set(['exited', 'lost']);

const addressKey = (a: string): string => `a-${a.replaceAll('.', '-')}`;
const nameKey = (n: string): string => `n-${Buffer.from(n, 'utf8').toString('hex')}`;

/** Addresses and names of the job network. */
export class AddressBook {
  constructor(
    private readonly addresses: AddressStore<AddressRecord>,
    private readonly names: AddressStore<NameRecord>,
    readonly network: JobNetworkConfig | null,
    private readonly log: Logger,
    /** The clock (tests move it). */
    private readonly now: () => number = Date.now,
  ) {}

  /** The configured network, or a clear refusal when there is none. */
  private config(): JobNetworkConfig {
    if (this.network) return this.network;
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      'no job network is configured (drover-controller --job-subnet CIDR [--job-gateway IP]); ' +
        'run the job with --net host, or configure one (docs/NETWORK.md)',
      { details: { reason: 'no-job-network' } },
    );
  }

  /**
   * Reserve an address (the one asked for, or the lowest free one) and the job's name for a job
   * about to start. ALREADY_EXISTS for an address or name in use; RESOURCE_EXHAUSTED when the
   * range has no free address; INVALID_ARGUMENT for an address outside it.
   */
  async reserve(jobId: string, name: string | null, wanted?: string): Promise<ReservedAddress> {
    const net = this.config();
    const record = (address: string): AddressRecord => ({
      address,
      jobId,
      state: 'reserved',
      since: new Date(this.now()).toISOString(),
    });
    let address: string;
    if (wanted !== undefined) {
      const n = ipv4ToInt(wanted);
      if (n < ipv4ToInt(net.first) || n > ipv4ToInt(net.last) || wanted === net.gateway) {
        throw new DroverError(
          ErrorCode.InvalidArgument,
          `address ${wanted} is not one the job network hands out (${net.first} to ${net.last}${net.gateway ? `, but the gateway ${net.gateway}` : ''})`,
          { details: { address: wanted, first: net.first, last: net.last } },
        );
      }
      await this.addresses
        .create(addressKey(wanted), record(wanted))
        .catch(async (err: unknown) => {
          if (!isDroverError(err, ErrorCode.AlreadyExists)) throw err;
          const holder = (await this.addresses.get(addressKey(wanted)))?.value;
          throw new DroverError(
            ErrorCode.AlreadyExists,
            `address ${wanted} is in use${holder?.jobId ? ` by job ${holder.jobId}` : ' on the segment (not by a Drover job)'}`,
            { details: { address: wanted, jobId: holder?.jobId ?? null } },
          );
        });
      address = wanted;
    } else {
      address = await this.reserveFree(net, record);
    }
    if (name !== null) {
      try {
        await this.claimName(name, jobId, address);
      } catch (err) {
        await this.release(address, jobId);
        throw err;
      }
    }
    return toJobAddress(net, address);
  }

  /** The lowest address of the range nobody holds, reserved by compare-and-set. */
  private async reserveFree(
    net: JobNetworkConfig,
    record: (a: string) => AddressRecord,
  ): Promise<string> {
    const first = ipv4ToInt(net.first);
    const last = ipv4ToInt(net.last);
    for (let round = 0; round < 5; round++) {
      const taken = new Set(await this.addresses.keys());
      for (let n = first; n <= last; n++) {
        const a = intToIpv4(n);
        if (a === net.gateway || taken.has(addressKey(a))) continue;
        try {
          await this.addresses.create(addressKey(a), record(a));
          return a;
        } catch (err) {
          if (!isDroverError(err, ErrorCode.AlreadyExists)) throw err;
        }
      }
      // Every address looked taken: foreign ones due for another probe are freed, then retry.
      if (!(await this.expireForeign())) break;
    }
    throw new DroverError(
      ErrorCode.ResourceExhausted,
      `the job network ${net.subnet} has no free address (${net.first} to ${net.last} are all in use); ` +
        'stop jobs you no longer need, or widen --job-range/--job-subnet',
      { details: { subnet: net.subnet, first: net.first, last: net.last } },
    );
  }

  private async claimName(name: string, jobId: string, address: string): Promise<void> {
    try {
      await this.names.create(nameKey(name), {
        name,
        jobId,
        address,
        since: new Date(this.now()).toISOString(),
      });
    } catch (err) {
      if (!isDroverError(err, ErrorCode.AlreadyExists)) throw err;
      const holder = (await this.names.get(nameKey(name)))?.value;
      if (holder?.jobId === jobId) return;
      throw new DroverError(
        ErrorCode.AlreadyExists,
        `the name ${name} belongs to job ${holder?.jobId ?? '?'} (${holder?.address ?? '?'}); names are unique among the cluster's jobs`,
        { details: { name, jobId: holder?.jobId ?? null } },
      );
    }
  }

  /** The job started: its reservation is its address now. */
  async confirm(address: string, jobId: string): Promise<void> {
    await this.addresses.mutate(addressKey(address), (cur) =>
      cur && cur.jobId === jobId ? { ...cur, state: 'assigned' } : cur,
    );
  }

  /** Give back a job's address and name (only what that job holds). */
  async release(address: string, jobId: string): Promise<void> {
    await this.addresses.mutate(addressKey(address), (cur) =>
      cur && cur.jobId === jobId ? null : cur,
    );
    for (const [key, v] of await this.names.list()) {
      if (v.value.jobId === jobId) await this.names.delete(key, v.revision).catch(() => undefined);
    }
  }

  /**
   * Something outside Drover answered for `address` on the segment: keep it out of the pool
   * for a while (probed again after {@link FOREIGN_RECHECK_MS}) and free the job's name.
   */
  async markForeign(address: string, jobId: string): Promise<void> {
    const now = this.now();
    await this.addresses.mutate(addressKey(address), (cur) =>
      cur && cur.jobId === jobId
        ? {
            address,
            jobId: '',
            state: 'foreign',
            since: new Date(now).toISOString(),
            recheckAfter: new Date(now + FOREIGN_RECHECK_MS).toISOString(),
          }
        : cur,
    );
    await this.release(address, jobId);
  }

  /** Drop foreign records due for another probe; true if any was. */
  private async expireForeign(): Promise<boolean> {
    let any = false;
    for (const [key, v] of await this.addresses.list()) {
      const due =
        v.value.state === 'foreign' && Date.parse(v.value.recheckAfter ?? '') <= this.now();
      if (
        due &&
        (await this.addresses.delete(key, v.revision).then(
          () => true,
          () => false,
        ))
      )
        any = true;
    }
    return any;
  }

  /**
   * A restore brings `jobId` back with its address (and name): it must still be the job's, or be
   * free (then it is taken again). FAILED_PRECONDITION when another job holds either now.
   */
  async claim(jobId: string, name: string | null, network: JobNetwork): Promise<void> {
    if (network.mode !== 'job') return;
    const key = addressKey(network.address);
    await this.addresses
      .create(key, {
        address: network.address,
        jobId,
        state: 'assigned',
        since: new Date(this.now()).toISOString(),
      })
      .catch(async (err: unknown) => {
        if (!isDroverError(err, ErrorCode.AlreadyExists)) throw err;
        const holder = (await this.addresses.get(key))?.value;
        if (holder?.jobId === jobId) return;
        throw new DroverError(
          ErrorCode.FailedPrecondition,
          `job ${jobId}'s address ${network.address} is now ${holder?.jobId ? `job ${holder.jobId}'s` : 'in use on the segment'}; it cannot come back with it`,
          { details: { jobId, address: network.address, holder: holder?.jobId ?? null } },
        );
      });
    if (name !== null) {
      await this.claimName(name, jobId, network.address).catch((err: unknown) => {
        throw new DroverError(ErrorCode.FailedPrecondition, (err as Error).message, { cause: err });
      });
    }
  }

  /** Where the job named `name` is. */
  async resolve(name: string): Promise<NameRecord> {
    const r = await this.names.get(nameKey(name));
    if (!r) {
      throw new DroverError(ErrorCode.NotFound, `no job is named ${name}`, { details: { name } });
    }
    return r.value;
  }

  /** Every named job and its address (what jobs' /etc/hosts list). */
  async table(): Promise<{ name: string; address: string }[]> {
    return [...(await this.names.list()).values()]
      .map((v) => ({ name: v.value.name, address: v.value.address }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * Release what jobs that ended for good hold: a job none of whose records is live or
   * checkpointed, and that no image set holds. Nothing is released while a host is unreachable
   * (its jobs are unknown). Returns the addresses released.
   */
  async reconcile(view: ClusterView): Promise<string[]> {
    if (!view.allHostsReachable) return [];
    const byJob = new Map<string, ClusterJob[]>();
    for (const j of view.jobs) byJob.set(j.id, [...(byJob.get(j.id) ?? []), j]);
    const gone = (jobId: string): boolean => {
      if (view.inImageSets.has(jobId)) return false;
      const records = byJob.get(jobId) ?? [];
      // No record anywhere (removed), or every record ended or moved on.
      return records.every((r) => ENDED.has(r.state) || r.state === 'migrated');
    };
    // Measured from when the listing began: a job that started after it is not in the view.
    const listed = view.listedFromMs ?? this.now();
    const young = (since: string | undefined): boolean =>
      since === undefined || listed - Date.parse(since) < GRACE_MS;
    const released: string[] = [];
    for (const [, v] of await this.addresses.list()) {
      const r = v.value;
      if (r.state === 'foreign' || young(r.since) || !gone(r.jobId)) continue;
      await this.release(r.address, r.jobId);
      released.push(r.address);
      this.log.info('address released', { address: r.address, jobId: r.jobId });
    }
    for (const [key, v] of await this.names.list()) {
      if (young(v.value.since) || !gone(v.value.jobId)) continue;
      await this.names.delete(key, v.revision).catch(() => undefined);
    }
    return released;
  }
}

/** What a run request carries of a reserved address (the agent derives the MAC from it). */
export interface ReservedAddress {
  address: string;
  prefixLength: number;
  gateway?: string;
}

function toJobAddress(net: JobNetworkConfig, address: string): ReservedAddress {
  return {
    address,
    prefixLength: net.prefixLength,
    ...(net.gateway ? { gateway: net.gateway } : {}),
  };
}
