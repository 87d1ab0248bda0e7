/**
 * The service helper's files on a host: the service spec the deployer writes, the supervisor's
 * PID record, the status the verbs report, where each service keeps them under the install root,
 * and reading them. Part of `bin/drover-service.js` (service.ts): node: modules and siblings only.
 */
import { readFileSync, realpathSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';

/**
 * `<root>/etc/service.json`: how this host runs its agent (written by the deployer); the other
 * services of the host (the NATS server, the controller) have `<root>/etc/<name>-service.json`.
 */
export interface ServiceSpec {
  format: 1;
  /**
   * The command of a service other than the agent: argv, with `@RELEASE@` standing for the
   * directory of the release it runs from (absent: the agent of the release, with `config`).
   */
  exec?: string[];
  mode: 'systemd' | 'supervisor';
  /** systemd unit name (mode systemd). */
  unit: string;
  /** The host's node binary. */
  node: string;
  /** The agent's JSON config file. */
  config: string;
  stateDir: string;
  /** PATH for the agent (CRIU lives in /usr/local/sbin). */
  path: string;
}

/** `<root>/run/supervisor.json`, kept by the supervisor. */
export interface PidRecord {
  format: 1;
  pid: number;
  startTicks: number;
  agentPid: number | null;
  agentStartTicks: number | null;
  /** The release the agent runs (directory name under releases/). */
  release: string | null;
  restarts: number;
}

/** What `status` (and `start`/`stop`) report. */
export interface ServiceStatus {
  installed: boolean;
  mode: ServiceSpec['mode'] | null;
  running: boolean;
  supervisorPid: number | null;
  agentPid: number | null;
  /** The release the running agent was started from. */
  release: string | null;
  /** The release `current` points to. */
  current: string | null;
  /** The label of the running (else the current) release, from its BUNDLE.json. */
  label: string | null;
  /** Epoch ms (this host's clock) the agent process started. */
  agentStartedAtMs: number | null;
  restarts: number;
  /** This host's clock when the status was taken. */
  nowMs: number;
}

/** Relative paths under the install root (the agent's). */
export const Layout = {
  spec: 'etc/service.json',
  pidFile: 'run/supervisor.json',
  agentLog: 'log/agent.log',
  supervisorLog: 'log/supervisor.log',
  current: 'current',
} as const;

/** The services a host may run: the agent, and the control plane's. */
export const SERVICE_NAMES = ['agent', 'nats', 'controller'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** Relative paths of service `name` under the install root (the agent's are {@link Layout}). */
export function layoutOf(name: ServiceName): {
  spec: string;
  pidFile: string;
  agentLog: string;
  supervisorLog: string;
  current: string;
} {
  if (name === 'agent') return Layout;
  return {
    spec: `etc/${name}-service.json`,
    pidFile: `run/${name}-supervisor.json`,
    agentLog: `log/${name}.log`,
    supervisorLog: `log/${name}-supervisor.log`,
    current: Layout.current,
  };
}

/** The placeholder of {@link ServiceSpec.exec} for the release directory. */
export const RELEASE_DIR = '@RELEASE@';

export const AGENT_MAIN = '/agent/dist/main.js';

export function readJson<T>(path: string): T | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return null;
  }
}

export function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(value) + '\n', { mode: 0o644 });
  renameSync(tmp, path);
}

export function currentRelease(root: string): string | null {
  try {
    return basename(realpathSync(join(root, Layout.current)));
  } catch {
    return null;
  }
}

/** A release's label (BUNDLE.json `release`). */
export function labelOf(root: string, id: string | null): string | null {
  if (!id) return null;
  return readJson<{ release?: string }>(join(root, 'releases', id, 'BUNDLE.json'))?.release ?? null;
}

export function readSpec(root: string, name: ServiceName = 'agent'): ServiceSpec {
  const path = join(root, layoutOf(name).spec);
  const spec = readJson<ServiceSpec>(path);
  if (!spec || spec.format !== 1) throw new Error(`${path} is missing or bad`);
  return spec;
}
