/** A real drover-controller for the suites, and the real `drover` CLI run as a subprocess. */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from './agents.js';

/** The built controller and CLI entry points. */
export const CONTROLLER_MAIN = join(REPO_ROOT, 'controller', 'dist', 'main.js');
export const CLI_MAIN = join(REPO_ROOT, 'controller', 'dist', 'cli', 'main.js');

/** A controller process started by a suite (killed by its PID when the suite ends). */
export class ControllerProcess {
  private constructor(
    readonly child: ChildProcess,
    private log: string,
  ) {}

  /** Start `drover-controller` against `natsUrls` (plus `extraArgs`); resolves once it acts. */
  static async start(
    natsUrls: readonly string[],
    id = 'ctl-test',
    extraArgs: readonly string[] = [],
  ): Promise<ControllerProcess> {
    const child = spawn(
      process.execPath,
      [
        CONTROLLER_MAIN,
        '--nats',
        natsUrls.join(','),
        '--id',
        id,
        '--unreachable-ms',
        '3000',
        ...extraArgs,
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    const proc = new ControllerProcess(child, '');
    child.stderr?.on('data', (d: Buffer) => (proc.log += d.toString()));
    const deadline = Date.now() + 20_000;
    while (!proc.log.includes('controller acting')) {
      if (child.exitCode !== null) throw new Error(`controller exited: ${proc.log.slice(-2000)}`);
      if (Date.now() > deadline)
        throw new Error(`controller did not start: ${proc.log.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return proc;
  }

  output(): string {
    return this.log;
  }

  /** True while the process runs. */
  running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGKILL it (by PID) and wait for the exit. */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await exited;
  }
}

/** What one CLI run printed and how it exited. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `drover ARGS...` against `natsUrls`. */
export function drover(
  natsUrls: readonly string[],
  args: readonly string[],
  timeoutMs = 300_000,
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_MAIN, '--nats', natsUrls.join(','), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}
