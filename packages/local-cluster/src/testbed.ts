/** A testbed run: its bridge and hosts, the services started in it, and its guaranteed teardown. */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { leaks, removeCgroups, type Leftover } from './cleanup.js';
import { Host } from './host.js';
import {
  DEFAULT_BASE_DIR,
  liveRuns,
  names,
  newRunId,
  releaseSubnet,
  reserveSubnet,
  writeOwner,
  type ProcessIdentity,
} from './names.js';
import { startNats, type NatsMode, type NatsOptions, type NatsService } from './nats.js';
import { createTestbedCerts, type TestbedCerts } from './security.js';
import { killChecked, mustRun, run, runSync, type OwnedProcess } from './proc.js';
import { startSshd, type SshdService } from './sshd.js';
import { DEFAULT_JOB_BRIDGE } from '@drover/protocol';

/** Options for {@link Testbed.create}. */
export interface TestbedOptions {
  /** Number of hosts (h1..hN), 1..99. */
  hosts: number;
  /** Start NATS as part of creation. Default 'none'. */
  nats?: NatsMode;
  /** Where process logs go. Default `<runDir>/logs` (removed by teardown; see withTestbed). */
  logDir?: string;
  /** Parent of run directories. Default /tmp/drover-testbed. */
  baseDir?: string;
  /**
   * Certificates for every host's agent, a controller, the runner, an operator and a viewer
   * (`<runDir>/certs`), and a NATS that requires TLS and holds each to its role. Default false
   * (plain NATS). With `nats: 'cluster'` the routes between the three servers require TLS too.
   */
  secure?: boolean;
}

/** Testbeds of this process not yet torn down; the exit handlers tear these down. */
const live = new Map<string, Testbed>();

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function onExit(): void {
  for (const tb of live.values()) tb.teardownSync();
}

function onSignal(signal: NodeJS.Signals): void {
  onExit();
  uninstallHandlers();
  // Re-raise so the process still dies of the signal, unless someone else handles it.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

let installed = false;
function installHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', onExit);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstallHandlers(): void {
  if (!installed) return;
  installed = false;
  process.off('exit', onExit);
  for (const s of SIGNALS) process.off(s, onSignal);
}

/** An emulated multi-host network: N hosts on a private bridge, plus NATS and sshd on demand. */
export class Testbed {
  /** Unique id of this run; every resource name starts with it. */
  readonly runId: string;
  /** Root of this run's state: owner record, host state dirs, NATS storage, default logs. */
  readonly runDir: string;
  readonly logDir: string;
  /** Third octet of the run's 10.77.X.0/24. */
  readonly subnet: number;
  /** The bridge's address (10.77.X.1), the root namespace's foot on the testbed network. */
  readonly bridgeAddress: string;
  readonly bridge: string;
  /**
   * The job network: hosts' job bridges (`bridge`, inside each host) hang off one segment; its
   * gateway address is the root namespace's, which plays "outside the cluster" (clients, servers).
   */
  readonly jobNetwork: { subnet: string; gateway: string; bridge: string; segment: string };
  /**
   * A directory every host sees at this same path, read-write: the emulation of an NFS mount
   * (job data that must follow a job across hosts). Nothing else of the run is visible in hosts
   * but their own disk (`/srv`) and the read-only PKI.
   */
  readonly sharedDir: string;
  readonly hosts: Host[] = [];
  /** NATS, once started. */
  nats: NatsService | undefined;
  /** The run's certificates when it is secure (see {@link TestbedOptions.secure}). */
  certs: TestbedCerts | undefined;
  readonly sshd = new Map<string, SshdService>();
  /** Root-namespace processes to kill on teardown (e.g. a single NATS server). */
  readonly owned: OwnedProcess[] = [];
  readonly #baseDir: string;
  /** Child process handles of this run (hosts' inits, nsenters, NATS, controllers). */
  readonly #children = new Set<ChildProcess>();
  #tornDown = false;
  #detached = false;

  private constructor(runId: string, baseDir: string, subnet: number, logDir: string | undefined) {
    this.runId = runId;
    this.#baseDir = baseDir;
    this.runDir = join(baseDir, runId);
    this.logDir = logDir ?? join(this.runDir, 'logs');
    this.subnet = subnet;
    this.bridgeAddress = `10.77.${subnet}.1`;
    this.bridge = names.bridge(runId);
    this.jobNetwork = {
      subnet: `10.78.${subnet}.0/24`,
      gateway: `10.78.${subnet}.1`,
      bridge: DEFAULT_JOB_BRIDGE,
      segment: names.jobSegment(runId),
    };
    this.sharedDir = join(this.runDir, 'shared');
  }

  /** Create a testbed; on any failure everything created so far is torn down and the error thrown. */
  static async create(opts: TestbedOptions): Promise<Testbed> {
    if (!Number.isInteger(opts.hosts) || opts.hosts < 1 || opts.hosts > 99) {
      throw new RangeError(`hosts must be 1..99, got ${opts.hosts}`);
    }
    const baseDir = opts.baseDir ?? DEFAULT_BASE_DIR;
    const runId = newRunId();
    const runDir = join(baseDir, runId);
    mkdirSync(runDir, { recursive: true, mode: 0o755 });
    let subnet: number;
    try {
      subnet = reserveSubnet(baseDir, runId);
      // Ordering: the owner record exists before any resource, so a sweep by another process
      // always sees this run as live, and a crash after this point leaves a sweepable run.
      writeOwner(runDir, runId, subnet);
    } catch (err) {
      rmSync(runDir, { recursive: true, force: true });
      throw err;
    }
    const tb = new Testbed(runId, baseDir, subnet, opts.logDir);
    live.set(runId, tb);
    liveRuns.add(runId);
    installHandlers();
    try {
      mkdirSync(tb.logDir, { recursive: true });
      await mustRun(['ip', 'link', 'add', 'name', tb.bridge, 'type', 'bridge', 'stp_state', '0']);
      await mustRun(['ip', 'addr', 'add', `${tb.bridgeAddress}/24`, 'dev', tb.bridge]);
      await mustRun(['ip', 'link', 'set', tb.bridge, 'up']);
      const seg = tb.jobNetwork.segment;
      await mustRun(['ip', 'link', 'add', 'name', seg, 'type', 'bridge', 'stp_state', '0']);
      await mustRun(['ip', 'addr', 'add', `${tb.jobNetwork.gateway}/24`, 'dev', seg]);
      await mustRun(['ip', 'link', 'set', seg, 'up']);
      const certsDir = join(tb.runDir, 'certs');
      mkdirSync(tb.sharedDir, { recursive: true, mode: 0o777 });
      mkdirSync(certsDir, { recursive: true, mode: 0o755 });
      const ctx = {
        runId,
        subnet,
        bridge: tb.bridge,
        jobSegment: seg,
        jobBridge: tb.jobNetwork.bridge,
        baseDir,
        sharedDir: tb.sharedDir,
        certsDir,
        runDir: tb.runDir,
        logDir: tb.logDir,
        track: (c: ChildProcess) => tb.track(c),
      };
      for (let i = 1; i <= opts.hosts; i++) tb.hosts.push(new Host(ctx, i));
      await Promise.all(tb.hosts.map((h) => h.start()));
      if (opts.secure) {
        tb.certs = await createTestbedCerts(
          certsDir,
          tb.hosts.map((h) => ({ name: h.name, address: h.address })),
          [tb.bridgeAddress],
        );
      }
      if (opts.nats !== undefined && opts.nats !== 'none') await tb.startNats(opts.nats);
    } catch (err) {
      await tb
        .teardown()
        .catch((e: unknown) => (err instanceof Error ? (err.cause ??= e) : undefined));
      throw err;
    }
    return tb;
  }

  /** Host by name (`h1`) or 1-based index. */
  host(which: string | number): Host {
    const h =
      typeof which === 'number' ? this.hosts[which - 1] : this.hosts.find((x) => x.name === which);
    if (!h) throw new Error(`no host ${which} in testbed ${this.runId}`);
    return h;
  }

  /** Start NATS ('single': one JetStream server on the bridge; 'cluster': R3 on h1..h3). */
  async startNats(
    mode: Exclude<NatsMode, 'none'>,
    options: NatsOptions = {},
  ): Promise<NatsService> {
    if (this.nats) throw new Error('NATS already started in this testbed');
    this.nats = await startNats(this, mode, options);
    return this.nats;
  }

  /** Start sshd inside a host (key-only root login); resolves once it answers with a banner. */
  async startSshd(host: Host | string): Promise<SshdService> {
    const h = typeof host === 'string' ? this.host(host) : host;
    const svc = await startSshd(this, h);
    this.sshd.set(h.name, svc);
    return svc;
  }

  /** The parent of this run's directory (`<baseDir>/<runId>`). */
  get baseDir(): string {
    return this.#baseDir;
  }

  /** True once {@link detach} handed the run over to its own processes. */
  get detached(): boolean {
    return this.#detached;
  }

  /** @internal Register a child process handle, released by {@link detach}. */
  track(child: ChildProcess): void {
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
  }

  /**
   * Let the run outlive this process (`drover up`): from now on it lives while any of its
   * keepers does — the hosts' inits, the root-namespace processes it owns (NATS, a controller)
   * and `extra` — and another process removes it with {@link removeRun}. The owner record says
   * so before anything is released, so a sweep never mistakes the run for a dead one. This
   * process's exit and signal handlers no longer tear it down, and its child handles no longer
   * keep the event loop alive.
   */
  detach(extra: readonly OwnedProcess[] = []): void {
    if (this.#tornDown) throw new Error(`testbed ${this.runId} is torn down`);
    if (this.#detached) return;
    const keepers: ProcessIdentity[] = [];
    for (const h of this.hosts) {
      if (!h.dead) keepers.push({ pid: h.initPid, startTime: h.initStartTime });
    }
    for (const p of [...this.owned, ...extra]) {
      if (p.startTime !== undefined) keepers.push({ pid: p.pid, startTime: p.startTime });
    }
    writeOwner(this.runDir, this.runId, this.subnet, keepers);
    this.#detached = true;
    for (const c of this.#children) c.unref();
    live.delete(this.runId);
    liveRuns.delete(this.runId);
    if (live.size === 0) uninstallHandlers();
  }

  /** Everything of this run still present on the machine (empty after a clean teardown). */
  leaks(): Leftover[] {
    return leaks(this.runId, this.#baseDir);
  }

  /**
   * Tear everything down. Order matters: processes first (tini by checked PID; its death kills
   * the whole host), then root-side veths (synchronous), then netns (freed asynchronously), then
   * the bridge, then files and the subnet reservation. Idempotent; collects errors and throws
   * the first, with the rest attached as `cause`.
   */
  async teardown(): Promise<void> {
    if (this.#tornDown) return;
    this.#tornDown = true;
    const errors: unknown[] = [];
    const step = async (f: () => Promise<unknown>): Promise<void> => {
      try {
        await f();
      } catch (err) {
        errors.push(err);
      }
    };
    await step(async () => this.nats?.stopAll());
    for (const p of this.owned) killChecked(p.pid, 'SIGKILL', ownedExpect(p));
    for (const h of this.hosts) h.killSync();
    await step(async () => {
      const gone = await Promise.all(this.hosts.map((h) => h.waitGone(5000)));
      if (gone.includes(false)) throw new Error('some host processes did not exit within 5 s');
    });
    // Job cgroups that agents in the hosts created (named after the run) are empty now.
    await step(async () => removeCgroups(this.runId));
    for (const h of this.hosts) await step(() => delLink(h.veth));
    for (const h of this.hosts) await step(() => delLink(h.jobUplink));
    for (const h of this.hosts) await step(() => delNetns(h.netns));
    await step(() => delLink(this.bridge));
    await step(() => delLink(this.jobNetwork.segment));
    await step(async () => rmSync(this.runDir, { recursive: true, force: true }));
    await step(async () => releaseSubnet(this.#baseDir, this.runId, this.subnet));
    live.delete(this.runId);
    liveRuns.delete(this.runId);
    if (live.size === 0) uninstallHandlers();
    if (errors.length > 0) {
      const [first, ...rest] = errors;
      const err = first instanceof Error ? first : new Error(String(first));
      if (rest.length > 0) err.cause ??= rest;
      throw err;
    }
  }

  /**
   * Best-effort synchronous teardown for exit and signal handlers: kill by checked PID, delete
   * links and namespaces, remove files. Never throws.
   */
  teardownSync(): void {
    if (this.#tornDown) return;
    this.#tornDown = true;
    for (const p of this.owned) killChecked(p.pid, 'SIGKILL', ownedExpect(p));
    for (const h of this.hosts) h.killSync();
    for (const h of this.hosts) runSync(['ip', 'link', 'del', h.veth]);
    for (const h of this.hosts) runSync(['ip', 'link', 'del', h.jobUplink]);
    for (const h of this.hosts) runSync(['ip', 'netns', 'del', h.netns]);
    runSync(['ip', 'link', 'del', this.bridge]);
    runSync(['ip', 'link', 'del', this.jobNetwork.segment]);
    // The hosts' cgroups empty as their processes die: retry for up to a second.
    for (let i = 0; i < 50; i++) {
      removeCgroups(this.runId);
      if (!leaks(this.runId, this.#baseDir).some((l) => l.kind === 'cgroup')) break;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
    try {
      rmSync(this.runDir, { recursive: true, force: true });
      releaseSubnet(this.#baseDir, this.runId, this.subnet);
    } catch {
      // best effort: a later sweepLeftovers() removes what is left
    }
    live.delete(this.runId);
    liveRuns.delete(this.runId);
  }
}

function ownedExpect(p: OwnedProcess): { startTime?: number; exe: readonly string[] } {
  return p.startTime === undefined ? { exe: p.exe } : { startTime: p.startTime, exe: p.exe };
}

/** Delete a link; a link that is already gone is fine. */
async function delLink(name: string): Promise<void> {
  const r = await run(['ip', 'link', 'del', name]);
  if (r.code !== 0 && !/Cannot find device|does not exist/.test(r.stderr)) {
    throw new Error(`ip link del ${name}: ${r.stderr.trim()}`);
  }
}

/** Delete a named network namespace; one that is already gone is fine. */
async function delNetns(name: string): Promise<void> {
  const r = await run(['ip', 'netns', 'del', name]);
  if (r.code !== 0 && !/No such file/.test(r.stderr))
    throw new Error(`ip netns del ${name}: ${r.stderr.trim()}`);
}
