/**
 * The local cluster's state file (`<dir>/cluster.json`): what `drover up` started, read by
 * `drover down` and, for their default NATS URL, by the other drover commands. This module reads
 * and writes only that file, so the CLI can import it without loading the testbed.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Where `drover up` keeps the local cluster unless told otherwise (`--dir`, `DROVER_LOCAL_DIR`). */
export const DEFAULT_LOCAL_DIR = '/var/lib/drover/local';

/** The state file's name inside the local cluster's directory. */
export const LOCAL_STATE_FILE = 'cluster.json';

/** A process of the local cluster, named by PID, start time and executable. */
export interface LocalProcess {
  role: 'nats' | 'controller' | 'host' | 'agent';
  /** `nats`, `controller`, or the host's name. */
  name: string;
  pid: number;
  /** Clock ticks since boot (field 22 of /proc/PID/stat): with the PID, one process. */
  startTime: number;
  /** Basename of /proc/PID/exe, checked before any signal. */
  exe: string;
  /** How `drover up` starts it again should it die (absent for hosts: they cannot be). */
  relaunch?: Relaunch;
}

/** A process's command line, environment and log files, to start it again as it was started. */
export interface Relaunch {
  argv: string[];
  env: Record<string, string>;
  stdout: string;
  stderr: string;
  /** For a process inside an emulated host: the host's cgroup, joined before nsenter runs. */
  cgroup?: string;
}

/** What `drover up` started: written while starting (`phase: starting`), complete once up. */
export interface LocalClusterState {
  version: 1;
  phase: 'starting' | 'up';
  /** The local cluster's directory (state file, run directory). */
  dir: string;
  /** The `drover up` process that wrote this. */
  upPid: number;
  upStartTime: number;
  createdAt: string;
  /** Hosts asked for. */
  hosts: number;
  /** The testbed run (set once its owner record exists). */
  runId?: string;
  runDir?: string;
  logDir?: string;
  natsUrl?: string;
  /**
   * How drover commands authenticate to this cluster's NATS (the operator's certificate), absent
   * when it runs without TLS (`drover up --insecure`).
   */
  tls?: { caFile: string; certFile: string; keyFile: string };
  hostList?: { name: string; address: string }[];
  /** Where Prometheus metrics are served: the controller's and each host's agent's. */
  metrics?: { controller: string | null; agents: Record<string, string> };
  processes: LocalProcess[];
}

/** Path of the state file in `dir`. */
export function localStatePath(dir: string): string {
  return join(dir, LOCAL_STATE_FILE);
}

/** The state in `dir`, or undefined when there is none (or it cannot be read). */
export function readLocalState(dir: string): LocalClusterState | undefined {
  try {
    const s = JSON.parse(readFileSync(localStatePath(dir), 'utf8')) as LocalClusterState;
    return s.version === 1 ? s : undefined;
  } catch {
    return undefined;
  }
}

/** Replace the state file whole (write, then rename): readers never see half a file. */
export function writeLocalState(state: LocalClusterState): void {
  const path = localStatePath(state.dir);
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o644 });
  renameSync(tmp, path);
}

/** The NATS URL of the local cluster in `dir` if one is up, for commands given no other. */
export function localNatsUrl(dir: string): string | undefined {
  const s = readLocalState(dir);
  return s?.phase === 'up' ? s.natsUrl : undefined;
}

/** The operator certificate of the local cluster in `dir` if one is up with TLS. */
export function localTls(dir: string): LocalClusterState['tls'] {
  const s = readLocalState(dir);
  return s?.phase === 'up' ? s.tls : undefined;
}
