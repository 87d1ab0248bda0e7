/**
 * A whole cluster for an end-to-end suite: a testbed with NATS, an agent in every host, a
 * controller, and the real `drover` CLI pointed at it; torn down by `stop()`.
 */
import assert from 'node:assert/strict';
import {
  AgentCluster,
  ControllerProcess,
  Testbed,
  type AgentOptions,
  type ControllerOptions,
} from '@drover/testbed';
import { drover, type CliResult } from './cli.js';

/** How the suite's cluster is made. */
export interface FixtureOptions {
  hosts?: number;
  nats?: 'single' | 'cluster';
  secure?: boolean;
  agents?: AgentOptions;
  controller?: ControllerOptions;
}

/** A suite's cluster. */
export class ClusterFixture {
  private constructor(
    readonly tb: Testbed,
    readonly agents: AgentCluster,
    private ctl: ControllerProcess,
  ) {}

  /** Make it, and wait until the controller has heard from every host. */
  static async start(opts: FixtureOptions = {}): Promise<ClusterFixture> {
    const hosts = opts.hosts ?? 3;
    const tb = await Testbed.create({
      hosts,
      nats: opts.nats ?? 'single',
      ...(opts.secure ? { secure: true } : {}),
    });
    try {
      const agents = await AgentCluster.start(tb, opts.agents ?? {});
      const ctl = await ControllerProcess.start(tb, opts.controller ?? {});
      const f = new ClusterFixture(tb, agents, ctl);
      await f.waitForHosts(hosts);
      return f;
    } catch (err) {
      await tb.teardown();
      throw err;
    }
  }

  /** NATS URLs of the testbed. */
  get urls(): string[] {
    return [...this.tb.nats!.urls];
  }

  /** The controller process now running. */
  get controller(): ControllerProcess {
    return this.ctl;
  }

  /** `drover --nats URLS ARGS...`. */
  drover(args: readonly string[], timeoutMs?: number): Promise<CliResult> {
    return drover(this.urls, args, timeoutMs);
  }

  /** `drover --json ARGS...`, which must succeed; its parsed output. */
  async json<T>(args: readonly string[]): Promise<T> {
    const r = await this.drover(['--json', ...args]);
    assert.equal(r.code, 0, `drover ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
    return JSON.parse(r.stdout) as T;
  }

  /** Wait until the controller lists `n` hosts. */
  async waitForHosts(n: number, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.drover(['hosts', '--json']);
      if (r.code === 0 && (JSON.parse(r.stdout) as { hosts: unknown[] }).hosts.length === n) return;
      if (Date.now() > deadline)
        throw new Error(`the controller did not see ${n} hosts: ${r.stderr}`);
      await new Promise((res) => setTimeout(res, 200));
    }
  }

  /** Replace the controller with one started with `options` (e.g. other flags). */
  async restartController(options: ControllerOptions = {}): Promise<void> {
    await this.ctl.kill();
    this.ctl = await ControllerProcess.start(this.tb, options);
    await this.waitForHosts(this.tb.hosts.length);
  }

  async stop(): Promise<void> {
    await this.ctl.kill();
    await this.agents.close();
    await this.tb.teardown();
  }
}
