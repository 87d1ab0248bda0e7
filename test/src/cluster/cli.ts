/** The real `drover` CLI, run as a subprocess the way operators run it. */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tlsFlags } from '@drover/testbed';

/** The repository root (test/dist/cluster → ../../..). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The built CLI entry point. */
export const CLI_MAIN = join(REPO_ROOT, 'controller', 'dist', 'cli', 'main.js');

/** What one CLI run printed and how it exited. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@link droverCli}. */
export interface CliOptions {
  /** Environment on top of the runner's (`undefined` removes a variable). */
  env?: Record<string, string | undefined>;
  /** SIGKILL it after this long. Default 300 000 ms. */
  timeoutMs?: number;
}

/** `drover-deploy`'s entry point in this checkout. */
export const DEPLOY_MAIN = join(REPO_ROOT, 'deploy', 'dist', 'main.js');

/** Run `drover ARGS...` and collect what it printed. */
export function droverCli(args: readonly string[], opts: CliOptions = {}): Promise<CliResult> {
  return nodeCli(CLI_MAIN, args, opts);
}

/** Run `drover-deploy ARGS...` and collect what it printed. */
export function deployCli(args: readonly string[], opts: CliOptions = {}): Promise<CliResult> {
  return nodeCli(DEPLOY_MAIN, args, opts);
}

/** Run node `main` with `args` and collect what it printed. */
function nodeCli(main: string, args: readonly string[], opts: CliOptions): Promise<CliResult> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // The runner's own test context must not turn the CLI into a test file.
  delete env.NODE_TEST_CONTEXT;
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [main, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal === null ? -1 : 128), stdout, stderr });
    });
  });
}

/** Run `drover --nats URLS ARGS...`. */
export function drover(
  natsUrls: readonly string[],
  args: readonly string[],
  timeoutMs = 300_000,
): Promise<CliResult> {
  return droverCli(['--nats', natsUrls.join(','), ...args], { timeoutMs });
}

/**
 * Run `drover --nats URLS ARGS...` as the holder of certificate `files` (none: no TLS flags at
 * all), with nothing from the machine's own setup (a `drover up` cluster, `DROVER_NATS_*`)
 * leaking in.
 */
export function droverAs(
  natsUrls: readonly string[],
  files: { caFile: string; certFile: string; keyFile: string } | undefined,
  args: readonly string[],
  timeoutMs = 120_000,
): Promise<CliResult> {
  return droverCli(['--nats', natsUrls.join(','), ...tlsFlags('nats', files), ...args], {
    timeoutMs,
    env: {
      DROVER_LOCAL_DIR: '/nonexistent/drover-local',
      DROVER_NATS_SERVERS: undefined,
      DROVER_NATS_CA: undefined,
      DROVER_NATS_CERT: undefined,
      DROVER_NATS_KEY: undefined,
    },
  });
}
