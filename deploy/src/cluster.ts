/**
 * The deployer's view of the cluster, through the controller (`@drover/bus`): wait for a host's
 * heartbeat, drain and uncordon it during a rolling upgrade. Connected lazily, once per run.
 */
import {
  Bus,
  callAllPages,
  ControllerClient,
  serverVersionOf,
  serverVersionProblem,
} from '@drover/bus';
import { DroverError, ErrorCode } from '@drover/common';
import type { HostStatus, OperationRecord } from '@drover/protocol';
import { deployerTls } from './agent-certs.js';
import { DeployError, DeployFailure } from './errors.js';
import type { Inventory } from './inventory.js';

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A connection to the controller named by the inventory. */
export class ClusterLink {
  #bus: Promise<Bus> | null = null;

  constructor(private readonly inv: Inventory) {}

  get heartbeatTimeoutMs(): number {
    return this.inv.controller.heartbeatTimeoutMs;
  }

  private async client(): Promise<ControllerClient> {
    return new ControllerClient(await this.bus());
  }

  private bus(): Promise<Bus> {
    // With a certificates directory: the deployer's operator identity (see agent-certs.ts).
    const tls = deployerTls(this.inv);
    this.#bus ??= Bus.connect({
      servers: this.inv.controller.servers,
      name: 'drover-deploy',
      requestTimeoutMs: 10_000,
      ...(tls ? { tls: { ...tls } } : {}),
      ...(this.inv.nats.user !== undefined ? { user: this.inv.nats.user } : {}),
      ...(this.inv.nats.password !== undefined ? { pass: this.inv.nats.password } : {}),
      ...(this.inv.nats.token !== undefined ? { token: this.inv.nats.token } : {}),
      ...(this.inv.nats.credsFile !== undefined ? { credsFile: this.inv.nats.credsFile } : {}),
    });
    this.#bus.catch(() => (this.#bus = null));
    return this.#bus;
  }

  /**
   * The NATS server's version and what it lacks when older than Drover expects (null: nothing),
   * judged as replicated state when the inventory lists several servers (a NATS cluster).
   */
  async natsServer(): Promise<{ version: string; problem: string | null }> {
    const version = serverVersionOf(await this.bus());
    const p = serverVersionProblem(version, this.inv.controller.servers.length > 1 ? 3 : 1);
    return { version, problem: p === null ? null : 'error' in p ? p.error.message : p.warning };
  }

  /** Every host the controller knows. */
  async hosts(): Promise<HostStatus[]> {
    return (await callAllPages(await this.client(), 'hosts', {})).hosts;
  }

  /** One host as the controller sees it, or null. */
  async host(name: string): Promise<HostStatus | null> {
    return (await this.hosts()).find((h) => h.host === name) ?? null;
  }

  /**
   * Wait until the controller has a heartbeat from `name`'s agent, and (with `startedAtMs`, the
   * host's clock when the agent was started) from an agent started then, not the one before it.
   */
  async waitHeartbeat(name: string, startedAtMs: number | null): Promise<HostStatus> {
    const deadline = Date.now() + this.heartbeatTimeoutMs;
    let last: unknown = null;
    for (;;) {
      try {
        const h = await this.host(name);
        if (h?.reachable) {
          // The agent's start on its own clock: its heartbeat time minus its uptime (rounded).
          const agentStart = Date.parse(h.info.time) - h.info.uptimeSec * 1000;
          if (startedAtMs === null || agentStart >= startedAtMs - 1500) return h;
        }
      } catch (err) {
        last = err;
      }
      if (Date.now() > deadline) {
        const why = last instanceof Error ? `: ${last.message}` : '';
        throw new DeployError(
          { host: name, failure: DeployFailure.cluster, step: 'heartbeat' },
          `the controller saw no heartbeat from the new agent within ` +
            `${Math.round(this.heartbeatTimeoutMs / 1000)} s${why}`,
          { cause: last ?? undefined },
        );
      }
      await sleep(250);
    }
  }

  /** Drain a host (cordon + move every job off it); waits for the drain to finish. */
  async drain(name: string, parallel: number, timeoutMs: number): Promise<OperationRecord> {
    const c = await this.client();
    return c.call('drain', { host: name, parallel }, timeoutMs);
  }

  async cordon(name: string): Promise<void> {
    await (await this.client()).call('cordon', { host: name }, 10_000);
  }

  async uncordon(name: string): Promise<void> {
    await (await this.client()).call('uncordon', { host: name }, 10_000);
  }

  /**
   * Have the controller forget a host whose agent is gone (`drover hosts rm`); false when the
   * controller never knew it.
   */
  async removeHost(name: string): Promise<boolean> {
    try {
      await (await this.client()).call('hosts-remove', { host: name }, 10_000);
      return true;
    } catch (err) {
      if (err instanceof DroverError && err.code === ErrorCode.NotFound) return false;
      throw err;
    }
  }

  /** Jobs the controller finds on a host (asks its agent). */
  async jobsOn(name: string): Promise<{ id: string; state: string }[]> {
    return (await callAllPages(await this.client(), 'jobs', { host: name })).jobs;
  }

  /** Fail early, with one clear message, when the controller cannot be reached. */
  async ensureReachable(): Promise<void> {
    try {
      await this.hosts();
    } catch (err) {
      throw new DroverError(
        ErrorCode.Unavailable,
        `cannot reach the controller through NATS ${this.inv.controller.servers.join(',')}: ` +
          `${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      );
    }
  }

  async close(): Promise<void> {
    const b = this.#bus;
    this.#bus = null;
    if (b) await (await b.catch(() => null))?.close();
  }
}
