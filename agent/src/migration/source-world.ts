/**
 * What the source side of a migration uses of the world below it — the peer, CRIU, the stream,
 * the job's cgroup and network, the page channel, scratch space, records — behind one interface,
 * so the phases in `source.ts` read as phases and unit tests can fake any part of it.
 * `realSourceWorld` binds it to the agent.
 */
import type { JobCgroup } from '@drover/cgroup';
import type { CallOptions, DumpOptions, DumpResult, DumpStats, SwrkSession } from '@drover/criu';
import { pageBytes, readDumpStats } from '@drover/criu';
import { processTree } from '@drover/native';
import type { MigrationProgressEvent } from '@drover/protocol';
import { StreamClient, type StreamClientOptions } from '@drover/transfer';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Agent } from '../agent.js';
import { checkpointJobFiles, planJobDump, type JobDumpPlan } from '../job-image.js';
import { lockJobNetwork, quiesceJob, type QuiesceResult } from '../job-network.js';
import { releaseOriginalNetwork, reopenOriginalNetwork } from './source-settle.js';
import type { JobRecord } from '../job-store.js';
import type { MigrationContext, PeerCall } from './context.js';
import { MigrationStore } from './migration-store.js';
import {
  admitPeer,
  closePort,
  freePort,
  localAddressToward,
  pageTls,
  watchPageConnection,
  type ConnectionRef,
} from './page-channel.js';
import { makeScratch, removeScratch } from './scratch.js';
import type { CriuTls } from '@drover/criu';

/** The sending end of a migration's framed stream (a `StreamClient`). */
export interface StreamSender {
  /** PINGs while `work` runs (a stream opened ahead of its data); `work`'s outcome. */
  keepAlive<T>(work: Promise<T>): Promise<T>;
  sendDirectory(dir: string): Promise<{ files: number; bytes: number }>;
  finish(): Promise<unknown>;
  abort(err: unknown): Promise<void>;
}

/** The world a source migration acts on. */
export interface SourceWorld {
  readonly hostId: string;
  /** Where peers reach this agent (its stream listen address). */
  readonly advertiseHost: string;
  call: PeerCall;
  /** CRIU's TLS for this side of the page channel (none without certificates). */
  pageTls(side: 'server' | 'client'): CriuTls | undefined;
  dump(opts: DumpOptions, call?: CallOptions): Promise<DumpResult>;
  /** A CRIU started ahead for the dump (`CallOptions.session`); null where none can be. */
  startCriu(): SwrkSession | null;
  openStream(
    opts: Omit<StreamClientOptions, 'faults' | 'tls'> & { peer: string },
  ): Promise<StreamSender>;
  cgroup(
    job: JobRecord,
  ): Promise<Pick<JobCgroup, 'freezeForCheckpoint' | 'destroy' | 'memoryUsage' | 'paths'>>;
  /** The job's network around a move (jobs with their own address). */
  network: {
    quiesce(job: JobRecord, ms: number): Promise<QuiesceResult>;
    lock(job: JobRecord): Promise<void>;
    /** The move failed: traffic and new connections flow again. */
    reopen(job: JobRecord): Promise<void>;
    /** The move succeeded: the original's link goes before the original does. */
    release(job: JobRecord): Promise<void>;
  };
  /** The page channel's admission on this host (post-copy: this host serves pages). */
  pages: {
    freePort(): Promise<number>;
    admit(port: number, peer: string): Promise<void>;
    close(port: number, peer: string): Promise<void>;
    /** The address this host's connections to `host` come from. */
    localAddressToward(host: string): Promise<string>;
    /**
     * Cut a page connection of CRIU's that stalls while `until` runs (page-channel.ts); each
     * second or two, `onAcked` hears the bytes the peer has acknowledged so far.
     */
    watch(
      c: ConnectionRef,
      until: Promise<unknown>,
      onCut: (why: string) => void,
      onAcked?: (bytes: number) => void,
    ): void;
  };
  /** Scratch (tmpfs) for the migration's images. */
  scratch: {
    make(migrationId: string): Promise<{ dir: string; onDisk: boolean }>;
    remove(migrationId: string): Promise<void>;
  };
  /** Drover's files beside CRIU's images. */
  images: {
    plan(job: JobRecord): Promise<JobDumpPlan>;
    addJobFiles(job: JobRecord, plan: JobDumpPlan, dir: string): Promise<number>;
    stats(dir: string): Promise<DumpStats>;
    pageBytes(dir: string): Promise<number>;
    /** Bytes of the regular files directly in `dir` (what the stream carries). */
    bytes(dir: string): Promise<number>;
  };
  /** The job's record and supervision here. */
  jobs: {
    save(job: JobRecord): Promise<void>;
    event(job: JobRecord): void;
    /** Stop supervising it (its processes go on purpose). */
    release(jobId: string): void;
    pids(job: JobRecord): number[];
    cpuFlags(): Promise<string[]>;
  };
  records: Pick<MigrationStore, 'save' | 'saveTicket' | 'ticket'>;
  progress(event: MigrationProgressEvent): void;
  log: { info(msg: string, f?: object): void; warn(msg: string, f?: object): void };
}

/** The world of a real agent. */
export function realSourceWorld(agent: Agent, ctx: MigrationContext): SourceWorld {
  const store = new MigrationStore(agent.config.stateDir);
  const { hostId, stateDir } = agent.config;
  return {
    hostId,
    advertiseHost: ctx.advertise.host,
    call: ctx.call,
    pageTls: (side) => pageTls(ctx.tlsFiles, side),
    dump: (opts, call) => agent.criu.dump(opts, call),
    startCriu: () => agent.criu.startSession(),
    openStream: ({ peer, ...opts }) =>
      StreamClient.connect({
        ...opts,
        // The destination's certificate must name it: agent <peer>.
        ...(ctx.tls ? { tls: { ...ctx.tls, peer } } : {}),
        faults: ctx.faults,
      }),
    cgroup: (job) => agent.cgroupOf(job),
    network: {
      quiesce: (job, ms) => quiesceJob(job.id, job.rootPid!, ms),
      lock: (job) => lockJobNetwork(job.id),
      reopen: reopenOriginalNetwork,
      release: releaseOriginalNetwork,
    },
    pages: {
      freePort: () => freePort(ctx.advertise.host),
      admit: admitPeer,
      close: closePort,
      localAddressToward,
      watch: (c, until, onCut, onAcked) => watchPageConnection(c, until, onCut, onAcked),
    },
    scratch: {
      make: (id) => makeScratch(hostId, id, 'images', stateDir),
      remove: (id) => removeScratch(hostId, id, stateDir, { inline: true }),
    },
    images: {
      plan: (job) => planJobDump(job, agent.config.checkpointOptions),
      addJobFiles: checkpointJobFiles,
      stats: readDumpStats,
      pageBytes,
      bytes: filesBytes,
    },
    jobs: {
      save: (job) => agent.store.save(job),
      event: (job) => agent.event(job),
      release: (id) => agent.supervisor.release(id),
      pids: (job) => processTree(job.rootPid!).map((p) => p.pid),
      cpuFlags: async () => (await agent.info()).cpuFlags,
    },
    records: store,
    progress: (e) => agent.publish('migration', e),
    log: agent.log,
  };
}

/**
 * Bytes of the regular files directly in `dir` (the scratch's ~45 images, on tmpfs: read
 * synchronously, no thread-pool round trip per file).
 */
// async: a failure rejects, never throws
async function filesBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isFile()) total += statSync(join(dir, e.name)).size;
  }
  return total;
}
