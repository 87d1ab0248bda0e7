/**
 * A whole cluster for an end-to-end suite: a testbed with NATS (plain or secure, one server or a
 * cluster), an agent in every host, a controller, and the real `drover` CLI pointed at it as a
 * given identity; torn down by `stop()`, which never leaves a piece behind.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AgentCluster,
  collectLogs,
  ControllerProcess,
  Testbed,
  type AgentHandle,
  type AgentOptions,
  type ControllerOptions,
} from '@drover/testbed';
import { drover, droverAs, type CliResult } from './cli.js';

/** Who runs the CLI on a secure testbed: a certificate's holder, or `nobody` (no TLS at all). */
export type CliIdentity = 'operator' | 'viewer' | 'nobody';

/** How the suite's cluster is made. */
export interface FixtureOptions {
  /** Emulated hosts (`h1`…). Default 3. */
  hosts?: number;
  nats?: 'single' | 'cluster';
  /** NATS requires TLS and holds every identity to its role; the CLI runs as an operator. */
  secure?: boolean;
  /** The agents, one per host; `false`: none (the suite starts or simulates its own). */
  agents?: AgentOptions | false;
  /** The controller; `false`: none. Only with agents does `start` wait for it to list them. */
  controller?: ControllerOptions | false;
  /** How long the controller may take to list every host. Default 20 000 ms. */
  hostsTimeoutMs?: number;
  /** When setup fails half-way, keep the logs first (see {@link ClusterFixture.saveLogs}). */
  saveLogsOnFailure?: string;
}

/** Run `step`, keep its error for later: teardown goes on whatever fails. */
async function attempt(errors: unknown[], step: () => Promise<unknown> | undefined): Promise<void> {
  try {
    await step();
  } catch (err) {
    errors.push(err);
  }
}

/** A suite's cluster. */
export class ClusterFixture {
  #agents: AgentCluster | undefined;
  #ctl: ControllerProcess | undefined;

  private constructor(readonly tb: Testbed) {}

  /**
   * Make it, and wait until the controller has heard from every host. When any step fails,
   * whatever was started is torn down before the error is thrown: a suite's `after` sees no
   * fixture to stop.
   */
  static async start(opts: FixtureOptions = {}): Promise<ClusterFixture> {
    const hosts = opts.hosts ?? 3;
    const tb = await Testbed.create({
      hosts,
      nats: opts.nats ?? 'single',
      ...(opts.secure ? { secure: true } : {}),
    });
    const f = new ClusterFixture(tb);
    try {
      if (opts.agents !== false) f.#agents = await AgentCluster.start(tb, opts.agents ?? {});
      if (opts.controller !== false) {
        f.#ctl = await ControllerProcess.start(tb, opts.controller ?? {});
        if (f.#agents) await f.waitForHosts(hosts, opts.hostsTimeoutMs);
      }
      return f;
    } catch (err) {
      if (opts.saveLogsOnFailure) await f.saveLogs(opts.saveLogsOnFailure).catch(() => undefined);
      await f.stop().catch(() => undefined);
      throw err;
    }
  }

  /** NATS URLs of the testbed. */
  get urls(): string[] {
    return [...this.tb.nats!.urls];
  }

  /** The testbed's run directory (jobs' shared files go under `<runDir>/shared`). */
  get runDir(): string {
    return this.tb.runDir;
  }

  /** The agents and the runner's NATS connection (a controller identity on a secure testbed). */
  get agents(): AgentCluster {
    if (!this.#agents) throw new Error('this fixture started no agents');
    return this.#agents;
  }

  /** The agent of `host`. */
  agent(host: string): AgentHandle {
    return this.agents.agent(host);
  }

  /** The controller process now running. */
  get controller(): ControllerProcess {
    if (!this.#ctl) throw new Error('this fixture started no controller');
    return this.#ctl;
  }

  /** A controller the suite started itself in place of the one before (the fixture stops it). */
  set controller(ctl: ControllerProcess) {
    this.#ctl = ctl;
  }

  /**
   * `drover --nats URLS ARGS...`: on a secure testbed as the operator, with nothing from the
   * machine's own setup leaking in (see {@link droverAs}).
   */
  drover(args: readonly string[], timeoutMs = 300_000): Promise<CliResult> {
    return this.tb.certs
      ? droverAs(this.urls, this.tb.certs.operator, args, timeoutMs)
      : drover(this.urls, args, timeoutMs);
  }

  /** `drover` as the holder of `who`'s certificate (`nobody`: no TLS flags at all). */
  as(who: CliIdentity, args: readonly string[], timeoutMs = 120_000): Promise<CliResult> {
    const certs = this.tb.certs;
    if (!certs) throw new Error('identities need a secure testbed');
    return droverAs(this.urls, who === 'nobody' ? undefined : certs[who], args, timeoutMs);
  }

  /** `drover --json ARGS...`, which must succeed; its parsed output. */
  async json<T>(args: readonly string[]): Promise<T> {
    const r = await this.drover(['--json', ...args]);
    assert.equal(r.code, 0, `drover ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
    return JSON.parse(r.stdout) as T;
  }

  /** `drover --json ARGS...` as `who`, which must succeed; its parsed output. */
  async jsonAs<T>(who: Exclude<CliIdentity, 'nobody'>, args: readonly string[]): Promise<T> {
    const r = await this.as(who, ['--json', ...args]);
    assert.equal(r.code, 0, `drover ${args.join(' ')} as ${who} exited ${r.code}: ${r.stderr}`);
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
    await this.#ctl?.kill();
    this.#ctl = await ControllerProcess.start(this.tb, options);
    await this.waitForHosts(this.tb.hosts.length);
  }

  /**
   * Keep what is needed to understand a failure, every host's logs and the controller's, in
   * `/tmp/drover-testbed-logs/<runId>`; says where on stderr, under `label`.
   */
  async saveLogs(label: string): Promise<string> {
    if (this.#ctl) writeFileSync(join(this.tb.logDir, 'controller.log'), this.#ctl.output());
    const dir = await collectLogs(this.tb, join('/tmp/drover-testbed-logs', this.tb.runId));
    console.error(`${label}: logs in ${dir}`);
    return dir;
  }

  /**
   * Stop the controller, close the runner's connection and tear the testbed down (which kills
   * every process it owns: agents, controllers, NATS). Each step runs even when one before it
   * failed; the first error is thrown at the end.
   */
  async stop(): Promise<void> {
    const errors: unknown[] = [];
    await attempt(errors, () => this.#ctl?.kill());
    await attempt(errors, () => this.#agents?.close());
    await attempt(errors, () => this.tb.teardown());
    if (errors.length > 0) throw errors[0];
  }
}
