/** Real drover agents inside testbed hosts, and a NATS client to talk to them from outside. */
import { join } from 'node:path';
import { crlPath } from '@drover/certs';
import { AgentClient, Bus } from '@drover/bus';
import { DroverError, ErrorCode, newSecret } from '@drover/common';
import type { MigrationMode, MigrationRecord } from '@drover/protocol';
import { droverBin } from './bins.js';
import type { Host, HostProcess } from './host.js';
import type { Testbed } from './testbed.js';

/** Where agents keep state inside a host (the host's private /srv). */
export const AGENT_STATE_DIR = '/srv/drover';

/** The port each agent's migration stream listens on, at its host's address. */
export const AGENT_STREAM_PORT = 7070;

/** The port each agent serves Prometheus metrics on, at its host's address (`/metrics`). */
export const AGENT_METRICS_PORT = 9464;

/** How agents are started. */
export interface AgentOptions {
  /** More `drover-agent` flags. */
  extraArgs?: readonly string[];
  /** Heartbeat interval. Default 500 ms (hosts appear and fail quickly in tests). */
  heartbeatMs?: number;
  /** Default 'debug'. */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
}

/** One agent running in a host. */
export class AgentHandle {
  process: HostProcess | null = null;

  constructor(
    readonly tb: Testbed,
    readonly host: Host,
    readonly client: AgentClient,
    private readonly options: AgentOptions = {},
  ) {}

  /** The host's id (its name). */
  get hostId(): string {
    return this.host.name;
  }

  /** Where this agent's metrics are served (reachable from the root namespace). */
  get metricsUrl(): string {
    return `http://${this.host.address}:${AGENT_METRICS_PORT}/metrics`;
  }

  /** Root-namespace path of a path inside the host's /srv. */
  srvPath(inside: string): string {
    if (!inside.startsWith('/srv/')) throw new Error(`not under /srv: ${inside}`);
    return join(this.host.stateDir, inside.slice('/srv/'.length));
  }

  /** Extra environment for the agent (e.g. `DROVER_FAULT`); applies from the next start. */
  env: Record<string, string> = {};

  /** Start (or restart) the agent and wait until it answers `info`. */
  async start(): Promise<void> {
    const agentMain = droverBin('drover-agent');
    const nats = this.tb.nats;
    if (!nats) throw new Error('the testbed has no NATS');
    this.process = await this.host.spawn(
      [
        process.execPath,
        agentMain,
        '--host-id',
        this.host.name,
        '--state-dir',
        AGENT_STATE_DIR,
        '--nats',
        nats.urls.join(','),
        '--heartbeat-ms',
        String(this.options.heartbeatMs ?? 500),
        '--stream-listen',
        `${this.host.address}:${AGENT_STREAM_PORT}`,
        '--log-level',
        this.options.logLevel ?? 'debug',
        '--metrics-addr',
        `${this.host.address}:${AGENT_METRICS_PORT}`,
        ...tlsFlags('nats', this.tb.certs?.identity('agent', this.host.name)),
        ...tlsFlags('stream', this.tb.certs?.identity('agent', this.host.name)),
        // The CA's revocation list, re-read by the agent when it changes.
        ...(this.tb.certs ? ['--stream-crl', crlPath(this.tb.certs.dir)] : []),
        ...(this.options.extraArgs ?? []),
      ],
      {
        name: 'agent',
        env: { PATH: `/usr/local/sbin:${process.env.PATH ?? '/usr/bin:/bin'}`, ...this.env },
      },
    );
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        await this.client.call('info', {}, 1000);
        return;
      } catch (err) {
        const exited = await Promise.race([
          this.process.exited.then(() => true),
          sleep(50).then(() => false),
        ]);
        if (exited)
          throw new Error(
            `agent on ${this.host.name} exited at start:\n${this.process.output().slice(-3000)}`,
          );
        if (Date.now() > deadline) throw err;
      }
    }
  }

  /** Restart with `env` (kill -9, then start): jobs keep running across it. */
  async restartWith(env: Record<string, string>): Promise<void> {
    await this.kill();
    this.env = env;
    await this.start();
  }

  /** SIGKILL the agent process (its jobs keep running). */
  async kill(): Promise<void> {
    const p = this.process;
    if (!p) return;
    p.kill('SIGKILL');
    await p.exited;
    this.process = null;
  }
}

/** A set of agents, one per host, and the runner's NATS connection. */
export class AgentCluster {
  private constructor(
    readonly bus: Bus,
    readonly agents: AgentHandle[],
  ) {}

  /** Start an agent in each of `hosts` (default: every host) of a testbed that has NATS. */
  static async start(
    tb: Testbed,
    options: AgentOptions & { hosts?: readonly Host[] } = {},
  ): Promise<AgentCluster> {
    if (!tb.nats) throw new Error('the testbed has no NATS');
    const bus = await Bus.connect({
      servers: tb.nats.urls,
      name: 'test-runner',
      requestTimeoutMs: 60_000,
      // In a secure testbed the runner is a controller identity: it may call agents directly.
      ...(tb.certs ? { tls: tb.certs.runner } : {}),
    });
    const hosts = options.hosts ?? tb.hosts;
    const agents = hosts.map((h) => new AgentHandle(tb, h, new AgentClient(bus, h.name), options));
    try {
      await Promise.all(agents.map((a) => a.start()));
    } catch (err) {
      await bus.close();
      throw err;
    }
    return new AgentCluster(bus, agents);
  }

  agent(name: string): AgentHandle {
    const a = this.agents.find((x) => x.hostId === name);
    if (!a) throw new DroverError(ErrorCode.NotFound, `no agent ${name}`);
    return a;
  }

  /**
   * Migrate `jobId` from `from` to `to` the way the controller does: authorize it on the
   * destination with a fresh ticket (`migrate-authorize`), then ask the source to `migrate`.
   */
  async migrate(
    jobId: string,
    from: string,
    to: string,
    opts: { mode?: MigrationMode; force?: boolean; timeoutMs?: number } = {},
  ): Promise<MigrationRecord> {
    const ticket = await this.authorize(jobId, from, to);
    return this.agent(from).client.call(
      'migrate',
      {
        jobId,
        destination: to,
        ticket,
        ...(opts.mode ? { mode: opts.mode } : {}),
        ...(opts.force !== undefined ? { force: opts.force } : {}),
      },
      opts.timeoutMs,
    );
  }

  /** Authorize on `to` one migration of `jobId` from `from`; returns the ticket. */
  async authorize(jobId: string, from: string, to: string): Promise<string> {
    const ticket = newSecret();
    await this.agent(to).client.call('migrate-authorize', { jobId, source: from, ticket });
    return ticket;
  }

  /** Close the runner's NATS connection (the agents keep running until their hosts go). */
  async close(): Promise<void> {
    await this.bus.close();
  }
}

/**
 * The `--<kind>-ca/--<kind>-cert/--<kind>-key` flags of an identity's certificate (none without
 * one): `nats` for the NATS connection, `stream` for mutual TLS on migration streams.
 */
export function tlsFlags(
  kind: 'nats' | 'stream',
  files: { caFile: string; certFile: string; keyFile: string } | undefined,
): string[] {
  return files
    ? [
        `--${kind}-ca`,
        files.caFile,
        `--${kind}-cert`,
        files.certFile,
        `--${kind}-key`,
        files.keyFile,
      ]
    : [];
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
