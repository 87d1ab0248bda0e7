/**
 * What the deployer does on one host over SSH, step by step: read its facts, stage and upload
 * files, unpack a release, install files with their modes, run the setup script, switch the
 * `current` release, drive the service helper, remove everything. Each step is idempotent and
 * says whether it changed anything.
 *
 * Layout under the install root (files are root's):
 *   releases/<id>/        unpacked bundles (the running one and the previous one are kept)
 *   current -> releases/<id>
 *   etc/                  0700: agent.json (0600), service.json, tls/*.pem and nats.creds (0600)
 *   run/supervisor.json   the supervisor's PIDs (no systemd)
 *   log/                  agent.log, supervisor.log
 */
import { DEFAULT_JOB_BRIDGE } from '@drover/protocol';
import { basename, posix } from 'node:path';
import type { Bundle } from './bundle.js';
import { BundlePaths } from './bundle.js';
import { DeployError, DeployFailure } from './errors.js';
import type { ServiceName, ServiceStatus } from './host/service.js';
import type { HostEntry } from './inventory.js';
import type { SshSession } from './ssh.js';
import { REMOTE_PATH, UNIT_NAME, UNIT_PATH } from './remote-paths.js';
import {
  FACTS_SCRIPT,
  FILES_SCRIPT,
  LAYOUT_SCRIPT,
  PREV_SCRIPT,
  PROCS_SCRIPT,
  PRUNE_SCRIPT,
  RELEASE_SCRIPT,
  REMOVE_SCRIPT,
  SWITCH_SCRIPT,
} from './remote-scripts.js';

export { REMOTE_PATH, UNIT_NAME, UNIT_PATH } from './remote-paths.js';

/** Minimum node on hosts (the agent's engines). */
const NODE_MIN = [20, 19] as const;
/** The agent's cgroup parent unless the inventory names one (the agent's own default). */
const DEFAULT_CGROUP_PARENT = 'drover';
/** Minimum CRIU (3.17 dies on current kernels, 4.1 cannot dump TCP/UDP sockets on >= 6.16). */
const CRIU_MIN = [4, 2] as const;

/** What `check` learns about a host. */
export interface HostFacts {
  uid: number;
  kernel: string;
  arch: string;
  os: string;
  /** `/proc/sys/kernel/ns_last_pid` exists only with CONFIG_CHECKPOINT_RESTORE. */
  checkpointRestore: boolean;
  /** CONFIG_CHECKPOINT_RESTORE in the kernel config, when the config is readable. */
  kernelConfig: 'y' | 'n' | 'unknown';
  node: string | null;
  nodeVersion: string | null;
  criu: string | null;
  criuVersion: string | null;
  criuCheck: 'ok' | 'failed' | 'absent';
  apt: boolean;
  systemd: boolean;
  freezer: 'v2' | 'v1' | 'none';
  pipeMaxSize: number;
  /** The agent's job bridge exists (jobs with their own address hang off it). */
  jobBridge: boolean;
}

function versionAtLeast(v: string | null, min: readonly number[]): boolean {
  if (!v) return false;
  const parts = v.replace(/^v/, '').split('.').map(Number);
  for (let i = 0; i < min.length; i++) {
    const a = parts[i] ?? 0;
    const b = min[i] ?? 0;
    if (a !== b) return a > b;
  }
  return true;
}

/** Parse the facts script's output. */
export function parseFacts(out: string): HostFacts {
  const kv = new Map<string, string>();
  for (const line of out.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) kv.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  const get = (k: string): string | null => kv.get(k) || null;
  return {
    uid: Number(get('uid') ?? -1),
    kernel: get('kernel') ?? '?',
    arch: get('arch') ?? '?',
    os: get('os') ?? '?',
    checkpointRestore: get('cr') === 'yes',
    kernelConfig: (get('kconfig') as HostFacts['kernelConfig'] | null) ?? 'unknown',
    node: get('node'),
    nodeVersion: get('node_version'),
    criu: get('criu'),
    criuVersion: get('criu_version'),
    criuCheck: get('criu') === null ? 'absent' : get('criu_check') === 'ok' ? 'ok' : 'failed',
    apt: get('apt') === 'yes',
    systemd: get('systemd') === 'yes',
    freezer: (get('freezer') as HostFacts['freezer'] | null) ?? 'none',
    pipeMaxSize: Number(get('pipe_max') ?? 0),
    jobBridge: get('job_bridge') === 'yes',
  };
}

/** A host's verdict: problems stop it, warnings do not. */
export interface Verdict {
  problems: string[];
  warnings: string[];
  /** True when CRIU is usable as it is. */
  criuReady: boolean;
}

/** Judge facts against what Drover needs on `host`. */
export function judgeFacts(f: HostFacts, host: HostEntry): Verdict {
  const problems: string[] = [];
  const warnings: string[] = [];
  if (f.uid !== 0) problems.push(`commands do not run as root (uid ${f.uid})`);
  if (!f.checkpointRestore || f.kernelConfig === 'n') {
    problems.push(`kernel ${f.kernel} lacks CONFIG_CHECKPOINT_RESTORE (no ns_last_pid)`);
  }
  if (!f.node) {
    problems.push(
      `no node on the host (install Node.js >= ${NODE_MIN.join('.')}, or set \`node:\` in the inventory)`,
    );
  } else if (!versionAtLeast(f.nodeVersion, NODE_MIN)) {
    problems.push(`node ${f.nodeVersion ?? '?'} at ${f.node} is older than ${NODE_MIN.join('.')}`);
  }
  const criuReady = f.criuCheck === 'ok' && versionAtLeast(f.criuVersion, CRIU_MIN);
  if (!criuReady) {
    const found =
      f.criu === null
        ? 'no CRIU'
        : `CRIU ${f.criuVersion ?? '?'} at ${f.criu} (check ${f.criuCheck})`;
    if (host.setup === 'none' || !f.apt) {
      problems.push(`${found}; need CRIU >= ${CRIU_MIN.join('.')} that passes \`criu check\``);
    } else {
      warnings.push(`${found}: setup will install or build CRIU >= ${CRIU_MIN.join('.')}`);
    }
  }
  if (f.freezer === 'none') problems.push('no cgroup freezer (v2 cgroup.freeze or v1 freezer)');
  if (!f.jobBridge) {
    warnings.push(
      `no job bridge ${host.agent.jobBridge ?? DEFAULT_JOB_BRIDGE}: jobs with their own address cannot run ` +
        'or arrive here (only --net host jobs); create it on the job segment (docs/NETWORK.md)',
    );
  }
  if (f.pipeMaxSize < 4 * 1024 * 1024) {
    warnings.push(
      `fs.pipe-max-size ${f.pipeMaxSize} < 4 MiB: setup raises it (lazy pages need it)`,
    );
  }
  return { problems, warnings, criuReady };
}

/** A file the host should have: its content, mode, and absolute path there. */
export interface DesiredFile {
  target: string;
  mode: number;
  content: string | Buffer;
}

/** One host's remote steps, on an open SSH session. */
export class HostOps {
  #stage: string | null = null;

  constructor(
    readonly ssh: SshSession,
    private readonly progress: (message: string) => void,
  ) {}

  get host(): HostEntry {
    return this.ssh.host;
  }

  get root(): string {
    return this.host.installRoot;
  }

  async facts(): Promise<HostFacts> {
    const out = await this.ssh.must(FACTS_SCRIPT, {
      step: 'facts',
      args: [this.host.node ?? '', this.host.agent.jobBridge ?? DEFAULT_JOB_BRIDGE],
      timeoutMs: 60_000,
    });
    return parseFacts(out);
  }

  /** The host's node: the inventory's, or the first on its PATH (null if none). */
  async nodePath(): Promise<string | null> {
    if (this.host.node) return this.host.node;
    const r = await this.ssh.run(`export PATH=${REMOTE_PATH}:$PATH; command -v node\n`, {
      step: 'node',
    });
    return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : null;
  }

  /** The service helper of the current release, or null when nothing is installed. */
  private helper(node: string): string {
    return `${node} ${this.root}/current/${BundlePaths.service}`;
  }

  /**
   * Run the service helper with a verb, for the agent or (`name`) another service of the host;
   * its JSON answer.
   */
  async service<T = ServiceStatus>(
    node: string,
    verb: 'status' | 'start' | 'stop',
    name: ServiceName = 'agent',
  ): Promise<T> {
    const script =
      `export PATH=${REMOTE_PATH}\n` +
      `if [ ! -f "$1/current/${BundlePaths.service}" ]; then echo '{"installed":false,"running":false}'; exit 0; fi\n` +
      `exec ${this.helper('"$2"')} "$3" --root "$1" --name "$4"\n`;
    const out = await this.ssh.must(script, {
      step: name === 'agent' ? verb : `${name} ${verb}`,
      args: [this.root, node, verb, name],
      timeoutMs: 60_000,
    });
    const line = out.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as T;
    } catch (err) {
      throw new DeployError(
        { host: this.host.name, failure: DeployFailure.command, step: verb },
        `${verb}: unexpected answer from the service helper: ${line.slice(0, 200)}`,
        { cause: err },
      );
    }
  }

  /** Jobs the host still runs, from their records (works with the agent stopped). */
  async liveJobs(node: string): Promise<{ id: string; name: string; state: string }[]> {
    const script =
      `if [ ! -f "$1/current/${BundlePaths.service}" ]; then echo '{"jobs":[]}'; exit 0; fi\n` +
      `exec "$2" "$1/current/${BundlePaths.service}" jobs --state-dir "$3"\n`;
    const out = await this.ssh.must(script, {
      step: 'jobs',
      args: [this.root, node, this.host.stateDir],
    });
    return (JSON.parse(out.trim().split('\n').pop() ?? '{}') as { jobs?: [] }).jobs ?? [];
  }

  /** A private staging directory of the login user (removed by {@link cleanup}). */
  async stage(): Promise<string> {
    if (this.#stage) return this.#stage;
    const out = await this.ssh.must('mktemp -d "${TMPDIR:-/tmp}/drover-deploy.XXXXXXXX"\n', {
      step: 'stage',
      asLoginUser: true,
    });
    this.#stage = out.trim();
    return this.#stage;
  }

  async cleanup(): Promise<void> {
    if (!this.#stage) return;
    const dir = this.#stage;
    this.#stage = null;
    await this.ssh.run('rm -rf -- "$1"\n', { step: 'cleanup', args: [dir], asLoginUser: true });
  }

  async layout(): Promise<void> {
    await this.ssh.must(LAYOUT_SCRIPT, { step: 'layout', args: [this.root] });
  }

  /** Whether a release is unpacked on the host. */
  async hasRelease(id: string): Promise<boolean> {
    const r = await this.ssh.run('[ -f "$1" ]\n', {
      step: 'release',
      args: [`${this.root}/releases/${id}/${BundlePaths.manifest}`],
    });
    return r.code === 0;
  }

  /** Upload and unpack a release unless the host has it; true if it was installed now. */
  async ensureRelease(bundle: Bundle): Promise<boolean> {
    const { id } = bundle.manifest;
    if (await this.hasRelease(id)) return false;
    const stage = await this.stage();
    const remote = posix.join(stage, basename(bundle.path));
    const mib = (bundle.size / 1048576).toFixed(1);
    this.progress(`uploading release ${bundle.manifest.release} (${id}, ${mib} MiB)`);
    let lastPct = -1;
    await this.ssh.put(bundle.path, remote, 'upload', (done, total) => {
      const pct = Math.floor((done / total) * 4) * 25;
      if (pct !== lastPct && pct < 100) {
        lastPct = pct;
        if (pct > 0) this.progress(`uploaded ${pct}%`);
      }
    });
    const out = await this.ssh.must(RELEASE_SCRIPT, {
      step: 'unpack',
      args: [this.root, id, bundle.sha256, remote],
      timeoutMs: 300_000,
    });
    return out.includes('installed');
  }

  /**
   * Put files in place with their modes (`apply`), or only tell which differ (`diff`); returns
   * the targets that changed (or would). Contents go through the staging directory, never argv.
   */
  async putFiles(
    files: readonly DesiredFile[],
    action: 'apply' | 'diff' = 'apply',
  ): Promise<string[]> {
    if (files.length === 0) return [];
    const stage = await this.stage();
    const args: string[] = [action];
    for (const [i, f] of files.entries()) {
      const src = posix.join(stage, `file-${i}`);
      await this.ssh.writeFile(src, f.content, 'config');
      args.push(src, f.mode.toString(8), f.target);
    }
    const out = await this.ssh.must(FILES_SCRIPT, { step: 'config', args });
    return out
      .split('\n')
      .filter((l) => l.startsWith('changed '))
      .map((l) => l.slice('changed '.length));
  }

  /**
   * After `putFiles`: put the replaced files back (`restore`; files that did not exist before
   * are removed) or forget the copies (`discard`).
   */
  async previousFiles(action: 'restore' | 'discard', targets: readonly string[]): Promise<void> {
    if (targets.length === 0) return;
    await this.ssh.must(PREV_SCRIPT, {
      step: action === 'restore' ? 'rollback' : 'config',
      args: [action, ...targets],
    });
  }

  /** Run deploy/setup-host.sh from a release (idempotent; streams its log lines as progress). */
  async setup(id: string, skipPackages: boolean): Promise<void> {
    this.progress('running setup-host.sh');
    await this.ssh.must(
      `export PATH=${REMOTE_PATH}\n` +
        (skipPackages ? 'export DROVER_SKIP_PACKAGES=1\n' : '') +
        'exec bash "$1"\n',
      {
        step: 'setup',
        args: [`${this.root}/releases/${id}/${BundlePaths.setup}`],
        // Building CRIU on a fresh host takes a while.
        timeoutMs: 1_800_000,
        onStderrLine: (l) => this.progress(l.replace(/^setup-host: /, 'setup: ')),
      },
    );
  }

  /** Point `current` at release `id`; true if it moved. */
  async switchCurrent(id: string): Promise<boolean> {
    const out = await this.ssh.must(SWITCH_SCRIPT, { step: 'switch', args: [this.root, id] });
    return out.includes('switched');
  }

  /** systemd: reload units and enable the agent's (after its file changed). */
  async enableUnit(): Promise<void> {
    await this.ssh.must(`systemctl daemon-reload && systemctl enable ${UNIT_NAME} >/dev/null\n`, {
      step: 'systemd',
    });
  }

  /** Keep only the named releases. */
  async prune(keep: readonly string[]): Promise<void> {
    await this.ssh.must(PRUNE_SCRIPT, { step: 'prune', args: [this.root, ...keep] });
  }

  /** The agent log's last lines (for errors about an agent that does not come up). */
  async agentLogTail(lines = 15): Promise<string> {
    const r = await this.ssh.run('tail -n "$2" "$1" 2>/dev/null\n', {
      step: 'log',
      args: [`${this.root}/log/agent.log`, String(lines)],
    });
    return r.stdout.trim();
  }

  /**
   * Remove the unit, the install root and (purge) the state directory and the agent's empty
   * cgroups (v2 and v1 hierarchies); what was removed.
   */
  async remove(purge: boolean): Promise<string[]> {
    const out = await this.ssh.must(REMOVE_SCRIPT, {
      step: 'remove',
      args: [
        this.root,
        UNIT_PATH,
        purge ? 'yes' : 'no',
        this.host.stateDir,
        this.host.agent.cgroupParent ?? DEFAULT_CGROUP_PARENT,
      ],
    });
    return out
      .split('\n')
      .filter((l) => l.startsWith('removed '))
      .map((l) => l.slice('removed '.length));
  }

  /** Processes that still mention the install root (there must be none after uninstall). */
  async processesUsing(path: string): Promise<string[]> {
    const r = await this.ssh.run(PROCS_SCRIPT, { step: 'verify', args: [path] });
    return r.stdout.split('\n').filter((l) => l.trim() !== '');
  }
}
