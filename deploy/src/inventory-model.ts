/**
 * The inventory's model: the compiled types (hosts, NATS, the controller), the service and setup
 * modes, and the defaults the compiler fills in. inventory.ts loads and compiles.
 */
import type { LogLevel } from '@drover/common';
import type { PinnedHostKey } from './host-key.js';

/** TLS files on the operator's machine (uploaded to each host where the agent needs them). */
export interface TlsFiles {
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

/** How agents reach NATS. Secrets are kept in memory only and written to hosts with mode 0600. */
export interface NatsInventory {
  readonly servers: readonly string[];
  readonly tls?: TlsFiles;
  readonly user?: string;
  readonly password?: string;
  readonly token?: string;
  /** A `.creds` file on the operator's machine. */
  readonly credsFile?: string;
  /**
   * A command (run by `sh -c` on the operator's machine) that makes nats-server load the
   * regenerated security config, run after it changed; `$DROVER_NATS_SECURITY_CONF` names it.
   */
  readonly reload?: string;
  /** The NATS servers the deployer runs itself (null: NATS runs another way, at `servers`). */
  readonly deploy: NatsDeployment | null;
}

/**
 * NATS servers the deployer installs, configures and upgrades (`nats.hosts`): one, or a
 * JetStream cluster of three, on inventory hosts, each listening on its host's address.
 */
export interface NatsDeployment {
  /** Inventory host names, in order (routes and client URLs follow it). */
  readonly hosts: readonly string[];
  /** The client port (TLS). */
  readonly port: number;
  /** The route port (cluster of three only; TLS with route certificates). */
  readonly routePort: number;
  /** `cluster.name`, and the CN of the route certificates. */
  readonly cluster: string;
}

/** How this machine reaches the controller (through NATS), and how long a heartbeat may take. */
export interface ControllerInventory {
  readonly servers: readonly string[];
  readonly heartbeatTimeoutMs: number;
  /**
   * The operator identity (in the certificates directory) the deployer reaches the controller
   * as; issued when missing. Default `deployer`.
   */
  readonly operator: string;
  /**
   * Inventory hosts the deployer runs a controller on (`controller.hosts`; several: HA by the
   * leadership lease). Empty: the controller runs another way.
   */
  readonly hosts: readonly string[];
  /** The deployed controllers' job network (their `jobNetwork`); null: `--net host` jobs only. */
  readonly jobNetwork: { subnet: string; gateway?: string; range?: string } | null;
  /** The deployed controllers' log level. */
  readonly logLevel: LogLevel;
}

/** The agent's settings on one host (compiled into its JSON config file). */
export interface AgentSettings {
  readonly heartbeatMs: number;
  /** `address:port` the migration stream listens on (peers connect to it). */
  readonly streamListen: string;
  readonly logLevel: LogLevel;
  readonly reserveMemoryMiB: number | null;
  readonly maxJobs: number | null;
  readonly cgroupParent: string | null;
  /** The bridge on the job segment jobs hang off (docs/NETWORK.md); null: the agent's default. */
  readonly jobBridge: string | null;
  /** `ADDRESS:PORT` the agent serves Prometheus metrics on (docs/OBSERVABILITY.md); null: off. */
  readonly metricsAddr: string | null;
  /** Mutual TLS for agent-to-agent streams: files on the operator's machine. */
  readonly streamTls: Required<TlsFiles> | null;
}

/** How the agent runs on the host: a systemd unit, or the deployer's own supervisor. */
export const ServiceMode = { auto: 'auto', systemd: 'systemd', supervisor: 'supervisor' } as const;
export type ServiceMode = (typeof ServiceMode)[keyof typeof ServiceMode];

/** What `install` runs of deploy/setup-host.sh: all of it, all but the apt step, or nothing. */
export const SetupMode = { full: 'full', skipPackages: 'skip-packages', none: 'none' } as const;
export type SetupMode = (typeof SetupMode)[keyof typeof SetupMode];

/** One host with defaults applied. */
export interface HostEntry {
  /** The host id: the agent's `--host-id` and the controller's name for it. */
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly user: string;
  /** Private key on the operator's machine; without it the SSH agent (`SSH_AUTH_SOCK`) is used. */
  readonly key: string | null;
  readonly hostKey: PinnedHostKey;
  readonly labels: Readonly<Record<string, string>>;
  readonly connectTimeoutMs: number;
  /** Where releases, config, pid files and logs live on the host. */
  readonly installRoot: string;
  /** The agent's state directory; the same path on every host (jobs keep their paths). */
  readonly stateDir: string;
  /** The host's node binary; found on its PATH when null. */
  readonly node: string | null;
  readonly setup: SetupMode;
  readonly service: ServiceMode;
  readonly agent: AgentSettings;
}

/** A validated inventory. */
export interface Inventory {
  /** The file it was read from (absolute). */
  readonly path: string;
  readonly nats: NatsInventory;
  readonly controller: ControllerInventory;
  readonly hosts: readonly HostEntry[];
  /**
   * The certificates directory on the operator's machine (`drover certs init` made it, with the
   * CA): the deployer issues each host's agent certificate from it and uploads it. Null: none,
   * and `install`/`upgrade` refuse unless `--insecure`.
   */
  readonly certs: string | null;
  /**
   * The context `install` writes for the CLI (`drover --context NAME`): the inventory's
   * `context`, else its file name without extension.
   */
  readonly context: string;
}

/** What the command line overrides in an inventory. */
export interface InventoryOverrides {
  /** `--certs DIR` (relative to the working directory). */
  readonly certs?: string;
}

export const LOG_LEVELS: readonly string[] = ['debug', 'info', 'warn', 'error'];
/** Defaults for a host's settings. */
export const DEFAULTS = {
  port: 22,
  user: 'root',
  connectTimeoutSec: 10,
  installRoot: '/opt/drover',
  stateDir: '/var/lib/drover',
  setup: SetupMode.full as SetupMode,
  service: ServiceMode.auto as ServiceMode,
  heartbeatMs: 2000,
  streamPort: 7070,
  logLevel: 'info' as LogLevel,
  heartbeatTimeoutSec: 60,
  operator: 'deployer',
  natsPort: 4222,
  natsRoutePort: 6222,
  natsCluster: 'drover',
};
