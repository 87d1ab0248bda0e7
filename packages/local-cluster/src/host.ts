/** One emulated host: its namespaces, its init (tini), commands run inside it, and its link. */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { exitOf, hostProcess, type HostProcess, type ProcessExit } from './host-process.js';
import {
  ENTER_OWN_CGROUPS,
  HOST_PATH,
  JOIN_HOST_CGROUPS,
  OWN_DISK,
  REMOUNT_SYS,
} from './host-scripts.js';
import { names } from './names.js';
import {
  children,
  exeName,
  innerPid,
  isAlive,
  killChecked,
  mustRun,
  run,
  startTime,
  StopWaiting,
  waitFor,
  type ExecResult,
} from './proc.js';
import { JOB_NAMESPACE_FLAGS } from '@drover/native';

export type { HostProcess, ProcessExit } from './host-process.js';

/** What a host needs to know about the run it belongs to. */
export interface HostContext {
  runId: string;
  /** Third octet of the run's 10.77.X.0/24. */
  subnet: number;
  bridge: string;
  /** The job network's segment bridge (root namespace) every host's job bridge is uplinked to. */
  jobSegment: string;
  /** The job bridge each host has (the agents' `--job-bridge`). */
  jobBridge: string;
  /** Parent of run directories: hidden inside hosts (each host sees only its own disk). */
  baseDir: string;
  runDir: string;
  /** Run paths every host sees at the same path: the NFS emulation (rw) and the PKI (ro). */
  sharedDir: string;
  certsDir: string;
  logDir: string;
  /** Register a child process handle (released when the run is detached). */
  track(child: ChildProcess): void;
}

/** Options for commands run inside a host. */
export interface HostExecOptions {
  /** Working directory inside the host. Default `/`. */
  cwd?: string;
  /** Extra environment variables (on top of PATH, HOME and the testbed markers). */
  env?: Record<string, string>;
  /** For exec: SIGKILL the command after this many ms. Default 30 000. */
  timeoutMs?: number;
  /** For exec: written to stdin. */
  input?: string;
}

/** Options for long-lived processes. */
export interface HostSpawnOptions extends Omit<HostExecOptions, 'timeoutMs' | 'input'> {
  /** Log file base name (`<logDir>/<host>/<name>.stdout|stderr.log`). Default the command's name. */
  name?: string;
}

/** An emulated host; create it through `Testbed.create`. */
export class Host {
  /** `h1`..`hN`; also the host's hostname. */
  readonly name: string;
  /** The host's address on eth0, 10.77.X.(10+i). */
  readonly address: string;
  /** Root-namespace path bind-mounted at /srv inside the host. */
  readonly stateDir: string;
  /** Network namespace name (`ip netns`). */
  readonly netns: string;
  /** Root-side end of the host's veth, enslaved to the bridge. */
  readonly veth: string;
  /** Root-side end of the host's uplink into the job segment (`uplink0` in its job bridge). */
  readonly jobUplink: string;
  /** Processes spawned in this host (for logs and teardown). */
  readonly processes: HostProcess[] = [];
  #initPid = 0;
  #initStart = 0;
  #unshare: ChildProcess | undefined;
  #unshareExit: Promise<ProcessExit> = Promise.resolve({ code: null, signal: null });
  #dead = false;
  readonly #ctx: HostContext;
  readonly #index: number;

  /** @internal use `Testbed.create`. */
  constructor(ctx: HostContext, index: number) {
    this.#ctx = ctx;
    this.#index = index;
    this.name = `h${index}`;
    this.address = `10.77.${ctx.subnet}.${10 + index}`;
    this.stateDir = join(ctx.runDir, this.name);
    this.netns = names.netns(ctx.runId, index);
    this.veth = names.hostVeth(ctx.runId, index);
    this.jobUplink = names.jobUplink(ctx.runId, index);
  }

  /** tini's PID in the root namespace. */
  get initPid(): number {
    return this.#initPid;
  }

  /** tini's start time (clock ticks since boot): with {@link initPid}, names it across PID reuse. */
  get initStartTime(): number {
    return this.#initStart;
  }

  /** True once `kill()` was called or tini died. */
  get dead(): boolean {
    return this.#dead || !isAlive(this.#initPid);
  }

  /** @internal Create the namespaces, the link and the init. */
  async start(): Promise<void> {
    const { runId, bridge, logDir } = this.#ctx;
    mkdirSync(this.stateDir, { recursive: true });
    mkdirSync(join(logDir, this.name), { recursive: true });
    await mustRun(['ip', 'netns', 'add', this.netns]);
    // The peer is created directly inside the namespace as eth0: it never exists in the root ns.
    await mustRun([
      'ip',
      'link',
      'add',
      this.veth,
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      this.netns,
    ]);
    await mustRun(['ip', 'link', 'set', this.veth, 'master', bridge, 'up']);
    const n = ['ip', '-n', this.netns];
    await mustRun([...n, 'addr', 'add', `${this.address}/24`, 'dev', 'eth0']);
    await mustRun([...n, 'link', 'set', 'eth0', 'up']);
    await mustRun([...n, 'link', 'set', 'lo', 'up']);
    // No default route: the only reachable network is the bridge's /24.
    await this.startJobBridge();

    const marker = names.marker(runId, this.#index);
    const script =
      // /run/netns (other hosts' namespaces) is detached before /run is covered: a mount hidden
      // under another cannot be bound back by CRIU when it restores a job of this host.
      'hostname "$2" && { umount -l /run/netns 2>/dev/null; true; } && ' +
      'mount -t tmpfs -o mode=0755 tmpfs /run && mount --bind "$1" /srv && ' +
      OWN_DISK +
      // Its own sysfs, and the cgroup hierarchies mounted again inside the host's cgroup
      // namespace, so the host sees its own links and its own cgroup as the root.
      REMOUNT_SYS +
      `exec tini -- /bin/sh -c 'while :; do sleep 3600; done' "$3"`;
    const log = openSync(join(logDir, this.name, 'init.log'), 'a');
    try {
      // detached = setsid: a Ctrl-C on the runner's terminal is not delivered to the hosts; the
      // exit handlers tear them down instead. unshare stays our child so Node reaps it.
      // nsenter, not `ip netns exec`: the latter mounts a fresh /sys without the cgroup
      // hierarchies the agents in the host need; the host's script mounts both (REMOUNT_SYS).
      this.#unshare = spawn(
        'nsenter',
        [
          `--net=/run/netns/${this.netns}`,
          '/bin/sh',
          '-c',
          ENTER_OWN_CGROUPS,
          'sh',
          names.cgroup(runId, this.name),
          'unshare',
          ...JOB_NAMESPACE_FLAGS,
          '--cgroup',
          '--kill-child',
          '/bin/sh',
          '-c',
          script,
          'sh',
          this.stateDir,
          this.name,
          marker,
          this.#ctx.baseDir,
          this.#ctx.sharedDir,
          this.#ctx.certsDir,
        ],
        { detached: true, stdio: ['ignore', log, log], env: this.env() },
      );
    } finally {
      closeSync(log);
    }
    this.#unshare.on('error', () => {});
    this.#ctx.track(this.#unshare);
    this.#unshareExit = exitOf(this.#unshare);
    const unsharePid = this.#unshare.pid ?? 0;
    this.#initPid = await waitFor(
      `tini of ${this.name}`,
      () => {
        const u = this.#unshare;
        if (!u || u.exitCode !== null || u.signalCode !== null)
          throw new StopWaiting(`init of ${this.name} exited: ${this.initLog()}`);
        return children(unsharePid).find((p) => exeName(p) === 'tini' && children(p).length > 0);
      },
      5000,
      5,
    ).catch((err: unknown) => {
      this.#unshare?.kill('SIGKILL'); // --kill-child takes its child along
      throw err;
    });
    this.#initStart = startTime(this.#initPid) ?? 0;
  }

  /**
   * The host's job bridge (`drover0`), uplinked into the run's job segment: the shared L2 segment
   * of the job network (docs/NETWORK.md). The host itself has no address on it; jobs do.
   */
  private async startJobBridge(): Promise<void> {
    const { jobSegment, jobBridge } = this.#ctx;
    await mustRun([
      'ip',
      'link',
      'add',
      this.jobUplink,
      'type',
      'veth',
      'peer',
      'name',
      'uplink0',
      'netns',
      this.netns,
    ]);
    await mustRun(['ip', 'link', 'set', this.jobUplink, 'master', jobSegment, 'up']);
    const n = ['ip', '-n', this.netns];
    await mustRun([...n, 'link', 'add', jobBridge, 'type', 'bridge', 'stp_state', '0']);
    await mustRun([...n, 'link', 'set', 'uplink0', 'master', jobBridge, 'up']);
    await mustRun([...n, 'link', 'set', jobBridge, 'up']);
  }

  /**
   * A path as this host sees it, reachable from the runner: through its init's root
   * (`/proc/<init>/root`), so the host's private /tmp, /dev/shm and /run are visible too.
   */
  path(inside: string): string {
    if (!inside.startsWith('/')) throw new Error(`not an absolute path: ${inside}`);
    return `/proc/${this.#initPid}/root${inside}`;
  }

  /** The host's init log (errors from hostname/mount/tini). */
  initLog(): string {
    try {
      return readFileSync(join(this.#ctx.logDir, this.name, 'init.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** Environment for commands inside the host: a clean PATH/HOME plus markers naming the run. */
  private env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    return {
      PATH: HOST_PATH,
      HOME: '/root',
      LANG: 'C.UTF-8',
      DROVER_TESTBED_RUN: this.#ctx.runId,
      DROVER_TESTBED_HOST: this.name,
      ...extra,
    };
  }

  private nsenter(cwd: string | undefined): string[] {
    if (this.dead) throw new Error(`host ${this.name} is dead`);
    // The command first joins the host's cgroups (paths as the runner sees them), then enters
    // all its namespaces, the cgroup namespace included: so its /proc/self/cgroup, and what
    // CRIU records for the jobs it dumps, are relative to the host, as on a real machine.
    // Root and working directory come from the host's init (`--root`, bare `--wd`), and `env -C`
    // changes directory inside the host: `--wd=DIR` would open DIR in the runner's mount
    // namespace, and a process whose cwd lies there cannot be dumped ("Can't lookup mount=N").
    return [
      '/bin/sh',
      '-c',
      JOIN_HOST_CGROUPS,
      'sh',
      names.cgroup(this.#ctx.runId, this.name),
      `--target=${this.#initPid}`,
      '--net',
      '--pid',
      '--mount',
      '--uts',
      '--ipc',
      '--cgroup',
      '--root',
      '--wd',
      '--',
      'env',
      '-C',
      cwd ?? '/',
      '--',
    ];
  }

  /** Run a command inside the host to completion; resolves with its exit code and output. */
  async exec(cmd: readonly string[], opts: HostExecOptions = {}): Promise<ExecResult> {
    return run([...this.nsenter(opts.cwd), ...cmd], {
      env: this.env(opts.env),
      ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
      ...(opts.input === undefined ? {} : { input: opts.input }),
    });
  }

  /**
   * Start a long-lived process inside the host. Resolves once its PIDs are known: the command is
   * held at a gate (a shell reading fd 3) until its root-namespace PID has been read from
   * nsenter's children, so even a command that exits at once is identified.
   */
  async spawn(cmd: readonly string[], opts: HostSpawnOptions = {}): Promise<HostProcess> {
    const prefix = this.nsenter(opts.cwd);
    const base = opts.name ?? (cmd[0] ?? 'proc').split('/').pop() ?? 'proc';
    const dir = join(this.#ctx.logDir, this.name);
    mkdirSync(dir, { recursive: true });
    const stdoutPath = join(dir, `${base}.stdout.log`);
    const stderrPath = join(dir, `${base}.stderr.log`);
    const out = openSync(stdoutPath, 'a');
    const err = openSync(stderrPath, 'a');
    let child: ChildProcess;
    try {
      child = spawn(
        prefix[0] ?? 'nsenter',
        [
          ...prefix.slice(1),
          '/bin/sh',
          '-c',
          'read _ <&3 || exit 125; exec 3<&-; exec "$@"',
          'sh',
          ...cmd,
        ],
        {
          // detached: a Ctrl-C on the runner's terminal reaches the exit handlers, not the hosts.
          detached: true,
          stdio: ['ignore', out, err, 'pipe'],
          env: this.env(opts.env),
        },
      );
    } finally {
      closeSync(out);
      closeSync(err);
    }
    child.on('error', () => {});
    this.#ctx.track(child);
    const exited = exitOf(child);
    const gate = child.stdio[3] as Socket | null;
    // A command killed before it read the gate resets the socket: that is not an error here.
    gate?.on('error', () => {});
    const nsenterPid = child.pid ?? 0;
    const pid = await waitFor(
      `PID of ${cmd.join(' ')} in ${this.name}`,
      () => {
        if (child.exitCode !== null || child.signalCode !== null)
          throw new StopWaiting(`nsenter for ${cmd.join(' ')} exited before the command started`);
        // The launcher is a shell joining the host's cgroups until it execs nsenter: its
        // children before that are its own helpers, not the command.
        if (exeName(nsenterPid) !== 'nsenter') return undefined;
        return children(nsenterPid)[0];
      },
      5000,
      2,
    ).catch((err: unknown) => {
      child.kill('SIGKILL'); // nsenter; its forked child is still held at the gate and sees EOF
      throw err;
    });
    const start = startTime(pid);
    const hostPid = innerPid(pid) ?? 0;
    // Closed once written: nsenter keeps its copy of fd 3 open, so our end would never see EOF
    // and would hold this process's event loop open for as long as the command runs.
    gate?.end('go\n', () => gate.destroy());
    const proc = hostProcess({
      name: base,
      host: this.name,
      pid,
      hostPid,
      start,
      stdoutPath,
      stderrPath,
      exited,
    });
    this.processes.push(proc);
    return proc;
  }

  /**
   * Abrupt death of the whole machine: SIGKILL tini (the kernel then kills everything in the
   * host's PID namespace) and take its link down, so peers see silence, not TCP resets from a
   * network stack that outlived its machine.
   */
  async kill(): Promise<void> {
    this.#dead = true;
    killChecked(this.#initPid, 'SIGKILL', { startTime: this.#initStart, exe: ['tini'] });
    await this.cutLink().catch(() => {});
    await this.#unshareExit;
    await Promise.all(this.processes.map((p) => p.exited));
  }

  /** Partition the host: set its root-side links down (the host and its jobs keep running). */
  async cutLink(): Promise<void> {
    await mustRun(['ip', 'link', 'set', this.veth, 'down']);
    await mustRun(['ip', 'link', 'set', this.jobUplink, 'down']);
  }

  /**
   * Slow what reaches this host over its link to `bytesPerSec` (a token bucket on the link's
   * root side), as a busy or distant network would; null lifts the limit.
   */
  async limitIncoming(bytesPerSec: number | null): Promise<void> {
    if (bytesPerSec === null) {
      await run(['tc', 'qdisc', 'del', 'dev', this.veth, 'root']);
      return;
    }
    const bits = Math.max(8000, Math.round(bytesPerSec * 8));
    await mustRun([
      'tc',
      'qdisc',
      'replace',
      'dev',
      this.veth,
      'root',
      'tbf',
      'rate',
      `${bits}bit`,
      'burst',
      '256kb',
      'latency',
      '2s',
    ]);
  }

  /** Heal a partition made by {@link cutLink}. */
  async restoreLink(): Promise<void> {
    await mustRun(['ip', 'link', 'set', this.veth, 'up']);
    await mustRun(['ip', 'link', 'set', this.jobUplink, 'up']);
  }

  /** @internal Kill the init by checked PID without waiting (exit handlers). */
  killSync(): void {
    this.#dead = true;
    killChecked(this.#initPid, 'SIGKILL', { startTime: this.#initStart, exe: ['tini'] });
  }

  /** @internal Wait (bounded) until the init's unshare and every spawned nsenter have exited. */
  async waitGone(timeoutMs: number): Promise<boolean> {
    const all = Promise.all([this.#unshareExit, ...this.processes.map((p) => p.exited)]);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    const ok = await Promise.race([all.then(() => true as const), timeout]);
    clearTimeout(timer);
    return ok;
  }
}
