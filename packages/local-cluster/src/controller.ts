/** A real drover-controller for a testbed run, started as a process in the root namespace. */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tlsFlags } from './agents.js';
import { droverBin } from './bins.js';
import type { ProcessExit } from './host.js';
import {
  exeName,
  killChecked,
  startTime,
  StopWaiting,
  waitFor,
  type OwnedProcess,
} from './proc.js';
import type { Testbed } from './testbed.js';

/** The controller runs on this process's Node: its exe name is what identity checks expect. */
const NODE_EXE = exeName(process.pid) ?? 'node';

/** How the controller is started. */
export interface ControllerOptions {
  /** Its lease holder id. Default `ctl-test`. */
  id?: string;
  /** Hosts silent this long are unreachable. Default 3000 ms (agents beat every 500 ms here). */
  unreachableMs?: number;
  /** Default 'debug'. */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** How long to wait until it holds the lease and acts. Default 20 000 ms. */
  timeoutMs?: number;
  /** More `drover-controller` flags (e.g. `--replicas 3`). */
  extraArgs?: readonly string[];
  /** Serve metrics on a free loopback port (`metricsUrl`). Default true. */
  metrics?: boolean;
}

/**
 * A `drover-controller` against the testbed's NATS. It is one of the run's owned processes:
 * teardown kills it by checked PID, and it carries the run's environment marker, so leak checks
 * and sweeps find it like any other process of the run. Its log is
 * `<logDir>/controller/<id>.stderr.log`.
 */
export class ControllerProcess {
  private constructor(
    readonly id: string,
    readonly pid: number,
    readonly startTime: number | undefined,
    readonly logPath: string,
    private readonly logOffset: number,
    /** Settles when the process has exited. */
    readonly exited: Promise<ProcessExit>,
  ) {}

  #exited = false;

  /** Where its Prometheus metrics are served (from its log), once it acts; null when off. */
  metricsUrl: string | null = null;

  /** Start the controller; resolves once it holds the lease and acts. */
  static async start(tb: Testbed, options: ControllerOptions = {}): Promise<ControllerProcess> {
    const nats = tb.nats;
    if (!nats) throw new Error('the testbed has no NATS');
    const id = options.id ?? 'ctl-test';
    const main = droverBin('drover-controller');
    const dir = join(tb.logDir, 'controller');
    mkdirSync(dir, { recursive: true });
    const logPath = join(dir, `${id}.stderr.log`);
    const err = openSync(logPath, 'a');
    const offset = statSync(logPath).size;
    let child;
    try {
      child = spawn(
        process.execPath,
        [
          main,
          '--nats',
          nats.urls.join(','),
          '--id',
          id,
          '--unreachable-ms',
          String(options.unreachableMs ?? 3000),
          '--log-level',
          options.logLevel ?? 'debug',
          ...tlsFlags('nats', tb.certs?.controller),
          // A free loopback port: several controllers (standbys) may run at once.
          ...(options.metrics === false ? [] : ['--metrics-addr', '127.0.0.1:0']),
          // The run's job network (its segment's subnet; the root namespace is the gateway).
          '--job-subnet',
          tb.jobNetwork.subnet,
          '--job-gateway',
          tb.jobNetwork.gateway,
          ...(options.extraArgs ?? []),
        ],
        {
          // detached (setsid), like the hosts: Ctrl-C goes to the runner's exit handlers.
          detached: true,
          stdio: ['ignore', 'ignore', err],
          // A clean environment: the operator's DROVER_* variables must not reconfigure it.
          env: {
            PATH: process.env.PATH ?? '/usr/bin:/bin',
            LANG: 'C.UTF-8',
            DROVER_TESTBED_RUN: tb.runId,
          },
        },
      );
    } finally {
      closeSync(err);
    }
    child.on('error', () => {});
    tb.track(child);
    const exited = new Promise<ProcessExit>((res) =>
      child.once('exit', (code, signal) => res({ code, signal })),
    );
    const pid = child.pid ?? 0;
    const owned: OwnedProcess = { pid, startTime: startTime(pid), exe: [NODE_EXE] };
    tb.owned.push(owned);
    void exited.then(() => {
      const i = tb.owned.indexOf(owned);
      if (i >= 0) tb.owned.splice(i, 1);
    });
    const proc = new ControllerProcess(id, pid, owned.startTime, logPath, offset, exited);
    void exited.then(() => (proc.#exited = true));
    let done = false;
    void exited.then(() => (done = true));
    try {
      await waitFor(
        `controller ${id} to act`,
        () => {
          const log = proc.output();
          if (log.includes('controller acting')) return true;
          if (done) throw new StopWaiting(`controller ${id} exited: ${log.slice(-2000)}`);
          return undefined;
        },
        options.timeoutMs ?? 20_000,
        50,
      );
    } catch (e) {
      await proc.kill();
      throw e;
    }
    proc.metricsUrl =
      /"msg":"metrics serving"[^\n]*"url":"([^"]+)"/.exec(proc.output())?.[1] ?? null;
    return proc;
  }

  /** True while the process runs. */
  running(): boolean {
    return !this.#exited;
  }

  /** What this controller logged since it started. */
  output(): string {
    try {
      return readFileSync(this.logPath).subarray(this.logOffset).toString();
    } catch {
      return '';
    }
  }

  /** SIGKILL it (by PID, checked against its start time) and wait for the exit. */
  async kill(): Promise<void> {
    killChecked(this.pid, 'SIGKILL', {
      exe: [NODE_EXE],
      ...(this.startTime === undefined ? {} : { startTime: this.startTime }),
    });
    await this.exited;
  }
}
