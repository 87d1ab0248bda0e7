/**
 * Simulated agents for the controller-at-scale benchmark: they serve the real agent API
 * (`drover.agent.<host>.<op>` through `serveAgentApi`, so every request is validated like a real
 * agent's) with realistic JobInfo/AgentInfo replies, and publish heartbeats on `drover.hb.<host>`,
 * but run no CRIU. A thousand of them share a few NATS connections in one process.
 */
import { Bus, serveAgentApi, type AgentHandlers } from '@drover/bus';
import { DroverError, ErrorCode } from '@drover/common';
import {
  heartbeatSubject,
  JobKind,
  macFor,
  JobState,
  MigrationState,
  pageOf,
  type AgentInfo,
  type AgentReplies,
  type JobInfo,
  type MigrationRecord,
} from '@drover/protocol';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
/** The state directory every simulated host uses (agents share one path across hosts). */
const STATE_DIR = '/var/lib/drover';
const LIVE: readonly string[] = ['starting', 'running', 'frozen', 'checkpointing', 'migrating'];

/** How many jobs each host gets: `first` on host 0, the rest of `total` spread evenly. */
export function distributeJobs(total: number, hosts: number, first: number): number[] {
  if (hosts <= 0) return [];
  const out = [Math.min(first, total)];
  let left = total - out[0]!;
  for (let i = 1; i < hosts; i++) {
    const n = Math.ceil(left / (hosts - i));
    out.push(n);
    left -= n;
  }
  return out;
}

/** A job as a real agent reports it (`toJobInfo`), for simulated job `n` on `host`. */
export function simJobInfo(host: string, n: number, startedAt: string): JobInfo {
  const id = `job-sim${n.toString(36).padStart(5, '0')}`;
  const jobDir = `${STATE_DIR}/jobs/${id}`;
  const rootPid = 10_000 + (n % 50_000);
  return {
    id,
    name: `worker-${n}`,
    host,
    kind: JobKind.namespaced,
    state: JobState.running,
    command: ['/usr/bin/node', '/opt/app/worker.js', '--shard', String(n)],
    cwd: '/',
    rootPid,
    mainPid: rootPid + 2,
    mainPidInside: 3,
    startedAt,
    exitedAt: null,
    exitCode: null,
    signal: null,
    memoryLimitBytes: null,
    jobDir,
    stdoutPath: `${jobDir}/stdout.log`,
    stderrPath: `${jobDir}/stderr.log`,
    restoredFrom: null,
    note: null,
    network: {
      mode: 'job',
      address: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`,
      prefixLength: 8,
      gateway: '10.0.0.1',
      mac: macFor(`10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`),
    },
    checkpointOptions: {},
    until: 'main',
    mainPidfile: null,
    tty: false,
  };
}

/** Memory a simulated job uses: 64 MiB to 512 MiB, fixed per job number. */
export function simJobMemory(n: number): number {
  return (64 + ((n * 37) % 8) * 64) * MiB;
}

/** The heartbeat / `info` reply of a simulated host (same fields as `buildAgentInfo`). */
export function simAgentInfo(
  host: string,
  jobs: Iterable<JobInfo>,
  opts: { startedAt: number; cpuFlags: readonly string[]; usedBytes: number },
): AgentInfo {
  const totalBytes = 64 * GiB;
  return {
    host,
    version: '0.1.0',
    time: new Date().toISOString(),
    uptimeSec: Math.round((Date.now() - opts.startedAt) / 1000),
    kernel: '6.18.0-sim',
    cpus: 16,
    cpuFlags: [...opts.cpuFlags],
    memory: { totalBytes, availableBytes: Math.max(0, totalBytes - 2 * GiB - opts.usedBytes) },
    criu: { version: '4.2.1', lazyPages: true, memTrack: false },
    stream: { host: '10.0.0.1', port: 7070 },
    jobs: [...jobs].map((j) => ({ id: j.id, state: j.state, name: j.name })),
  };
}

/** Requests the simulated fleet answered, by operation, and when the first migrate came. */
export interface SimCounters {
  requests: Map<string, number>;
  heartbeats: number;
  firstMigrateAtMs: number | null;
}

/** One simulated host. */
export class SimulatedAgent {
  readonly jobs = new Map<string, JobInfo>();
  /** Migrations the controller authorized onto this host: `<ticket> <jobId> <source>`. */
  readonly authorized = new Set<string>();
  readonly memory = new Map<string, number>();
  readonly startedAt = Date.now();

  constructor(
    readonly host: string,
    private readonly fleet: {
      agent(host: string): SimulatedAgent | undefined;
      counters: SimCounters;
      cpuFlags: readonly string[];
    },
  ) {}

  /** Add job number `n`, running here. */
  addJob(n: number, startedAt = new Date().toISOString()): JobInfo {
    const j = simJobInfo(this.host, n, startedAt);
    this.jobs.set(j.id, j);
    this.memory.set(j.id, simJobMemory(n));
    return j;
  }

  info(): AgentInfo {
    let used = 0;
    for (const [id, j] of this.jobs) if (LIVE.includes(j.state)) used += this.memory.get(id) ?? 0;
    return simAgentInfo(this.host, this.jobs.values(), {
      startedAt: this.startedAt,
      cpuFlags: this.fleet.cpuFlags,
      usedBytes: used,
    });
  }

  private job(jobId: string): JobInfo {
    const j = this.jobs.get(jobId);
    if (!j) {
      throw new DroverError(ErrorCode.NotFound, `no job ${jobId} on ${this.host}`, {
        details: { jobId },
      });
    }
    return j;
  }

  private live(jobId: string): JobInfo {
    const j = this.job(jobId);
    if (!LIVE.includes(j.state)) {
      throw new DroverError(ErrorCode.FailedPrecondition, `job ${jobId} is ${j.state}`, {
        details: { jobId, state: j.state },
      });
    }
    return j;
  }

  private count(op: string): void {
    const c = this.fleet.counters.requests;
    c.set(op, (c.get(op) ?? 0) + 1);
  }

  /** The agent API, answered from memory. Operations that need CRIU or processes are refused. */
  handlers(): AgentHandlers {
    const notSimulated = (op: string) => async (): Promise<never> => {
      this.count(op);
      throw new DroverError(ErrorCode.FailedPrecondition, `${op} is not simulated`, {
        details: { host: this.host },
      });
    };
    const h = {
      info: async () => (this.count('info'), this.info()),
      list: async (r) => {
        this.count('list');
        // Paged like a real agent's list: by id, after the cursor, at most the limit.
        const all = [...this.jobs.values()].sort((a, b) =>
          a.id < b.id ? -1 : a.id > b.id ? 1 : 0,
        );
        const p = pageOf(all, (j) => j.id, { after: r.after, limit: r.limit });
        return { jobs: p.items, next: p.next };
      },
      inspect: async (r) => {
        this.count('inspect');
        const j = this.job(r.jobId);
        const live = LIVE.includes(j.state);
        const root = j.rootPid ?? 0;
        return {
          ...j,
          processes: live
            ? [
                { pid: root, nspid: [root, 1], state: 'S', cmdline: ['tini', '-s', '--'] },
                { pid: root + 1, nspid: [root + 1, 2], state: 'S', cmdline: ['/bin/sh', '-c'] },
                { pid: root + 2, nspid: [root + 2, 3], state: 'S', cmdline: [...j.command] },
              ]
            : [],
          memoryUsageBytes: live ? (this.memory.get(j.id) ?? null) : null,
          effectiveCheckpointOptions: null,
        };
      },
      preflight: async (r) => {
        this.count('preflight');
        const j = this.live(r.jobId);
        return {
          jobId: j.id,
          ok: true,
          reasons: [],
          files: [{ path: '/opt/app/worker.js', size: 4096 }],
          jobDirBytes: 64 * 1024,
        } satisfies AgentReplies['preflight'];
      },
      'files-check': async () => (this.count('files-check'), { missing: [], sizeDiffers: [] }),
      signal: async (r) => {
        this.count('signal');
        const j = this.live(r.jobId);
        if (r.signal === 'SIGKILL' || r.signal === 'SIGTERM') {
          Object.assign(j, {
            state: JobState.exited,
            exitedAt: new Date().toISOString(),
            signal: r.signal,
            rootPid: null,
            mainPid: null,
          });
        }
        return j;
      },
      'images-list': async () => (this.count('images-list'), { images: [] }),
      'migrations-list': async () => (this.count('migrations-list'), { migrations: [] }),
      'migrate-authorize': async (r) => {
        this.count('migrate-authorize');
        this.authorized.add(`${r.ticket} ${r.jobId} ${r.source}`);
        return { expiresAt: new Date(Date.now() + (r.ttlMs ?? 60_000)).toISOString() };
      },
      migrate: async (r) => {
        this.count('migrate');
        this.fleet.counters.firstMigrateAtMs ??= performance.now();
        return this.migrate(r.jobId, r.destination, r.mode ?? 'auto', r.ticket);
      },
      'migrate-status': async (r) => {
        this.count('migrate-status');
        throw new DroverError(ErrorCode.NotFound, `no migration ${r.migrationId} on this host`);
      },
      run: notSimulated('run'),
      adopt: notSimulated('adopt'),
      logs: notSimulated('logs'),
      'tty-write': notSimulated('tty-write'),
      freeze: notSimulated('freeze'),
      'freeze-many': notSimulated('freeze-many'),
      clock: notSimulated('clock'),
      'criu-warm': notSimulated('criu-warm'),
      'dumps-prepare': notSimulated('dumps-prepare'),
      'checkpoint-many': notSimulated('checkpoint-many'),
      'checkpoint-stop': notSimulated('checkpoint-stop'),
      thaw: notSimulated('thaw'),
      'thaw-many': notSimulated('thaw-many'),
      checkpoint: notSimulated('checkpoint'),
      restore: notSimulated('restore'),
      'images-delete': notSimulated('images-delete'),
      'image-push': notSimulated('image-push'),
      'image-move': notSimulated('image-move'),
      'image-fetch': notSimulated('image-fetch'),
      discard: notSimulated('discard'),
      remove: notSimulated('remove'),
      'names-set': async (r) => (this.count('names-set'), { jobs: r.names.length }),
      'migrate-prepare': notSimulated('migrate-prepare'),
      'migrate-abort': notSimulated('migrate-abort'),
      'migrate-commit': notSimulated('migrate-commit'),
      'migrate-find': notSimulated('migrate-find'),
      'image-decode': notSimulated('image-decode'),
    } satisfies AgentHandlers;
    return h;
  }

  /** A migration that takes no time: the job moves to `destination`'s simulated agent. */
  migrate(jobId: string, destination: string, mode: string, ticket: string): MigrationRecord {
    const j = this.live(jobId);
    const dest = this.fleet.agent(destination);
    if (!dest) {
      throw new DroverError(ErrorCode.Unavailable, `nobody serves drover.agent.${destination}`, {
        retryable: true,
        details: { destination },
      });
    }
    // Like a real destination: only a migration the controller authorized.
    if (!dest.authorized.delete(`${ticket} ${jobId} ${this.host}`)) {
      throw new DroverError(
        ErrorCode.PermissionDenied,
        `migration of job ${jobId} from ${this.host} is not authorized on ${destination}`,
      );
    }
    const migrationId = `mig-sim-${jobId}-${destination}`;
    const now = new Date().toISOString();
    dest.jobs.set(jobId, {
      ...j,
      host: destination,
      restoredFrom: migrationId,
      note: `migrated from ${this.host} by ${migrationId}`,
    });
    dest.memory.set(jobId, this.memory.get(jobId) ?? 0);
    Object.assign(j, {
      state: JobState.migrated,
      rootPid: null,
      mainPid: null,
      mainPidInside: null,
      note: `moved to ${destination} by ${migrationId}`,
    });
    const bytes = this.memory.get(jobId) ?? 0;
    return {
      migrationId,
      jobId,
      role: 'source',
      source: this.host,
      destination,
      mode: mode === 'post-copy' ? 'post-copy' : 'stop-copy',
      state: MigrationState.done,
      startedAt: now,
      updatedAt: now,
      timeline: [
        { phase: 'preparing', atMs: 0 },
        { phase: 'done', atMs: 1 },
      ],
      stats: {
        frozenMs: 1,
        dumpMs: 0,
        transferMs: 0,
        restoreMs: 0,
        totalMs: 1,
        bytes,
        files: 20,
        pages: Math.floor(bytes / 4096),
      },
      error: null,
      note: 'simulated',
    };
  }
}

/** Options of a simulated fleet. */
export interface SimFleetOptions {
  servers: readonly string[];
  /** Host names. */
  hosts: readonly string[];
  /** Jobs per host, by index (see `distributeJobs`). */
  jobsPerHost: readonly number[];
  /** NATS connections the hosts are spread over. */
  connections: number;
  heartbeatMs: number;
  cpuFlags: readonly string[];
}

/** A fleet of simulated agents served over a few NATS connections. */
export class SimFleet {
  readonly counters: SimCounters = { requests: new Map(), heartbeats: 0, firstMigrateAtMs: null };
  readonly agents = new Map<string, SimulatedAgent>();
  private readonly timers: NodeJS.Timeout[] = [];
  private beating = false;

  private constructor(
    readonly options: SimFleetOptions,
    readonly buses: Bus[],
  ) {}

  get cpuFlags(): readonly string[] {
    return this.options.cpuFlags;
  }

  agent(host: string): SimulatedAgent | undefined {
    return this.agents.get(host);
  }

  /** Connect, create every agent and its jobs, and serve their APIs (heartbeats start apart). */
  static async start(options: SimFleetOptions): Promise<SimFleet> {
    const buses: Bus[] = [];
    for (let i = 0; i < options.connections; i++) {
      buses.push(
        await Bus.connect({
          servers: options.servers,
          name: `bench-sim-agents-${i}`,
          requestTimeoutMs: 30_000,
        }),
      );
    }
    const fleet = new SimFleet(options, buses);
    const startedAt = new Date().toISOString();
    let n = 0;
    options.hosts.forEach((host, i) => {
      const a = new SimulatedAgent(host, fleet);
      for (let k = 0; k < (options.jobsPerHost[i] ?? 0); k++) a.addJob(n++, startedAt);
      fleet.agents.set(host, a);
      serveAgentApi(buses[i % buses.length]!, host, a.handlers());
    });
    await Promise.all(buses.map((b) => b.flush()));
    return fleet;
  }

  /** Start heartbeats: each host every `heartbeatMs`, their phases spread over the interval. */
  startHeartbeats(): void {
    if (this.beating) return;
    this.beating = true;
    const { heartbeatMs } = this.options;
    [...this.agents.values()].forEach((a, i) => {
      const bus = this.buses[i % this.buses.length]!;
      const beat = (): void => {
        bus.publish(heartbeatSubject(a.host), a.info());
        this.counters.heartbeats++;
      };
      const offset = Math.floor((i / this.agents.size) * heartbeatMs);
      const t = setTimeout(() => {
        beat();
        this.timers.push(setInterval(beat, heartbeatMs));
      }, offset);
      this.timers.push(t);
    });
  }

  /** Stop heartbeats (the hosts keep answering requests). */
  stopHeartbeats(): void {
    for (const t of this.timers.splice(0)) clearTimeout(t);
    this.beating = false;
  }

  /** Requests answered so far, by operation. */
  requests(op: string): number {
    return this.counters.requests.get(op) ?? 0;
  }

  async close(): Promise<void> {
    this.stopHeartbeats();
    await Promise.all(this.buses.map((b) => b.close()));
  }
}
