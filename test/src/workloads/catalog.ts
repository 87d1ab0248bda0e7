/** The catalog of self-checking workloads and how to build the command line and environment for one. */
import { fileURLToPath } from 'node:url';
import { DroverError, ErrorCode } from '@drover/common';

/** Absolute path of the repository's `test/workloads` directory (same from `src/` and `dist/`). */
export const WORKLOADS_DIR = fileURLToPath(new URL('../../workloads/', import.meta.url));

/** Interpreters the workloads run under. `node` is the Node running this code. */
export const INTERPRETERS = {
  node: process.execPath,
  python: '/usr/bin/python3',
  bash: '/bin/bash',
} as const;
export type Interpreter = keyof typeof INTERPRETERS;

/** Options a workload may accept beyond `dir`, `seed` and `failVerify` (which all accept). */
export type WorkloadOption = 'mb' | 'port' | 'threads';

/**
 * Every workload: its interpreter, its file under `test/workloads`, its default arguments, the
 * options it accepts, and how often it writes a heartbeat.
 */
export const WORKLOADS = {
  memory: {
    interpreter: 'node',
    file: 'memory.mjs',
    args: ['--mb', '256'],
    accepts: ['mb'],
    heartbeatMs: 10,
  },
  pipeline: { interpreter: 'bash', file: 'pipeline.sh', args: [], accepts: [], heartbeatMs: 50 },
  threads: {
    interpreter: 'node',
    file: 'threads.mjs',
    args: ['--threads', '4'],
    accepts: ['threads'],
    heartbeatMs: 50,
  },
  files: { interpreter: 'node', file: 'files.mjs', args: [], accepts: [], heartbeatMs: 50 },
  redis: { interpreter: 'node', file: 'redis.mjs', args: [], accepts: ['port'], heartbeatMs: 50 },
  python: { interpreter: 'python', file: 'python.py', args: [], accepts: [], heartbeatMs: 50 },
  node: { interpreter: 'node', file: 'node.mjs', args: [], accepts: [], heartbeatMs: 50 },
} as const satisfies Record<
  string,
  {
    interpreter: Interpreter;
    file: string;
    args: readonly string[];
    accepts: readonly WorkloadOption[];
    heartbeatMs: number;
  }
>;
export type WorkloadName = keyof typeof WORKLOADS;

/** Every workload name, in table order. */
export const WORKLOAD_NAMES = Object.keys(WORKLOADS) as WorkloadName[];

/** What to start a workload with. Options a workload does not accept are refused. */
export interface WorkloadOptions {
  /** The workload's working directory: it must exist; everything the job writes goes there. */
  dir: string;
  /** Seed of its data (default 1). */
  seed?: number;
  /** memory: MiB to allocate (64 to 1024 in practice). */
  mb?: number;
  /** redis: port on 127.0.0.1 (default: random in 20000-40000). */
  port?: number;
  /** threads: number of worker threads (default 4). */
  threads?: number;
  /** Corrupt the state right after setup, so the first verification reports ok:false. */
  failVerify?: boolean;
}

/** The argv (absolute paths) that starts workload `name` under the contract of test/workloads/README.md. */
export function workloadCommand(name: WorkloadName, options: WorkloadOptions): string[] {
  const spec = WORKLOADS[name];
  const accepts: readonly WorkloadOption[] = spec.accepts;
  const argv: string[] = [
    INTERPRETERS[spec.interpreter],
    WORKLOADS_DIR + spec.file,
    '--dir',
    options.dir,
  ];
  const extra: [WorkloadOption, number | undefined][] = [
    ['mb', options.mb],
    ['port', options.port],
    ['threads', options.threads],
  ];
  const defaults: string[] = [...spec.args];
  for (const [option, value] of extra) {
    if (value === undefined) continue;
    if (!accepts.includes(option)) {
      throw new DroverError(ErrorCode.InvalidArgument, `workload ${name} takes no --${option}`, {
        details: { workload: name, option },
      });
    }
    const at = defaults.indexOf(`--${option}`);
    if (at >= 0) defaults.splice(at, 2); // an explicit value replaces the default
    argv.push(`--${option}`, String(value));
  }
  argv.push(...defaults);
  if (options.seed !== undefined) argv.push('--seed', String(options.seed));
  if (options.failVerify === true) argv.push('--fail-verify');
  return argv;
}

/**
 * The environment to start workloads with: `base` (default: this process's) minus what would make a
 * job undumpable or unpredictable, plus UV_USE_IO_URING=0 (CRIU cannot dump io_uring) and no Python
 * bytecode files written into the repository.
 */
export function workloadEnv(base: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined) env[k] = v;
  // NODE_OPTIONS could add an inspector or loaders; NODE_TEST_CONTEXT is node:test's own plumbing.
  delete env['NODE_OPTIONS'];
  delete env['NODE_TEST_CONTEXT'];
  env['UV_USE_IO_URING'] = '0';
  env['PYTHONDONTWRITEBYTECODE'] = '1';
  return env;
}
