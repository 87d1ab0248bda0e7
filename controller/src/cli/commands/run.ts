/**
 * `drover run [--host H] [--name N] [--net job|host] [--ip A] [-t] [--until main|all]
 * [--main-pidfile P] [--checkpoint-opt O]... -- CMD...`: start a job (placed when no host is
 * given), by default with its own address on the job network. Answers once the command's exec
 * succeeded; a command that cannot start is a failure (exit 1, and why).
 */
import type { CommandModule } from 'yargs';
import { JOB_UNTIL, parseCheckpointOptions, type CheckpointOptions } from '@drover/protocol';
import { callController, type GlobalArgs } from '../context.js';
import { UsageError } from '@drover/cli-kit';

type Args = GlobalArgs & {
  host: string | undefined;
  name: string | undefined;
  cwd: string | undefined;
  memory: number | undefined;
  env: string[] | undefined;
  net: 'job' | 'host' | undefined;
  ip: string | undefined;
  tty: boolean | undefined;
  until: (typeof JOB_UNTIL)[number] | undefined;
  'main-pidfile': string | undefined;
  'checkpoint-opt': string[] | undefined;
  cmd: string[] | undefined;
};

/** Request fields by the flag that sets them (validation errors name the flag). */
const RUN_FLAGS = {
  cwd: '--cwd',
  host: '--host',
  name: '--name',
  memoryLimitBytes: '--memory',
  env: '--env',
  hostname: '--hostname',
  command: 'the command',
} as const;

export const runCommand: CommandModule<GlobalArgs, Args> = {
  command: 'run [cmd..]',
  describe: 'Run a command as a migratable job',
  builder: (y) =>
    y
      .positional('cmd', { type: 'string', array: true, describe: 'the command, after --' })
      .option('host', { type: 'string', describe: 'run on this host (default: placement picks)' })
      .option('name', {
        type: 'string',
        describe: 'a name other jobs resolve to its address (their /etc/hosts, drover resolve)',
      })
      .option('net', {
        choices: ['job', 'host'] as const,
        describe:
          'job (default): its own network namespace and address, which move with it; ' +
          "host: the host's network (outside connections cannot move)",
      })
      .option('ip', { type: 'string', describe: 'this address from the job subnet (--net job)' })
      .option('cwd', { type: 'string', describe: 'working directory (absolute)' })
      .option('memory', { type: 'number', describe: 'memory limit in MiB' })
      .option('env', { type: 'string', array: true, describe: 'KEY=VALUE (repeatable)' })
      .option('tty', {
        alias: 't',
        type: 'boolean',
        describe: 'run the command on a terminal of the job (output in drover logs)',
      })
      .option('until', {
        choices: JOB_UNTIL,
        describe:
          'main (default): the job ends with its command (or --main-pidfile process); ' +
          'all: it lives while any of its processes does (commands that daemonise)',
      })
      .option('main-pidfile', {
        type: 'string',
        describe:
          "once the command exits 0, the job's main process is the PID it wrote to this path " +
          "(inside the job), as systemd's Type=forking",
      })
      .option('checkpoint-opt', {
        type: 'string',
        array: true,
        describe:
          'a CRIU option for this job: file-locks, link-remap, ghost-limit=SIZE, tcp-established, ' +
          'skip-in-flight, tcp-close, weak-sysctls, evasive-devices (no-NAME turns one off)',
      }),
  handler: async (argv) => {
    const command = [...(argv.cmd ?? []), ...((argv['--'] as string[] | undefined) ?? [])].map(
      String,
    );
    if (command.length === 0) {
      throw new UsageError('give the command to run after --, e.g. drover run -- sleep 600');
    }
    if (argv.memory !== undefined && !(Number.isFinite(argv.memory) && argv.memory > 0)) {
      throw new UsageError('--memory wants a size in MiB, e.g. --memory 512');
    }
    const env: Record<string, string> = {};
    for (const kv of argv.env ?? []) {
      const i = kv.indexOf('=');
      if (i <= 0) throw new UsageError(`--env wants KEY=VALUE, got ${kv}`);
      env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    let checkpointOptions: CheckpointOptions = {};
    try {
      checkpointOptions = parseCheckpointOptions(argv['checkpoint-opt'] ?? []);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    if (argv['main-pidfile'] !== undefined && !argv['main-pidfile'].startsWith('/')) {
      throw new UsageError('--main-pidfile wants an absolute path inside the job');
    }
    await callController(
      argv,
      'run',
      {
        command,
        ...(argv.host ? { host: argv.host } : {}),
        ...(argv.name ? { name: argv.name } : {}),
        ...(argv.cwd ? { cwd: argv.cwd } : {}),
        ...(argv.memory !== undefined
          ? { memoryLimitBytes: Math.round(argv.memory * 1024 * 1024) }
          : {}),
        ...(Object.keys(env).length ? { env } : {}),
        ...(argv.net ? { net: argv.net } : {}),
        ...(argv.ip ? { address: argv.ip } : {}),
        ...(argv.tty ? { tty: true } : {}),
        ...(argv.until ? { until: argv.until } : {}),
        ...(argv['main-pidfile'] ? { mainPidfile: argv['main-pidfile'] } : {}),
        ...(Object.keys(checkpointOptions).length ? { checkpointOptions } : {}),
      },
      (j) =>
        `${j.id} running on ${j.host}${j.network.mode === 'job' ? ` at ${j.network.address}` : ''} (${j.placement})`,
      undefined,
      RUN_FLAGS,
    );
  },
};
