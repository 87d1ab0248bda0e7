/**
 * `drover run [--host H] [--name N] [--net job|host] [--ip A] -- CMD...`: start a job (placed
 * when no host is given), by default with its own address on the job network. Answers once the
 * command's exec succeeded; a command that cannot start is a failure (exit 1, and why).
 */
import type { CommandModule } from 'yargs';
import { callController, type GlobalArgs } from '../context.js';

type Args = GlobalArgs & {
  host: string | undefined;
  name: string | undefined;
  cwd: string | undefined;
  memory: number | undefined;
  env: string[] | undefined;
  net: 'job' | 'host' | undefined;
  ip: string | undefined;
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
      .option('env', { type: 'string', array: true, describe: 'KEY=VALUE (repeatable)' }),
  handler: async (argv) => {
    const command = [...(argv.cmd ?? []), ...((argv['--'] as string[] | undefined) ?? [])].map(
      String,
    );
    if (command.length === 0) {
      throw Object.assign(
        new Error('give the command to run after --, e.g. drover run -- sleep 600'),
        {
          usage: true,
        },
      );
    }
    if (argv.memory !== undefined && !(Number.isFinite(argv.memory) && argv.memory > 0)) {
      throw Object.assign(new Error('--memory wants a size in MiB, e.g. --memory 512'), {
        usage: true,
      });
    }
    const env: Record<string, string> = {};
    for (const kv of argv.env ?? []) {
      const i = kv.indexOf('=');
      if (i <= 0)
        throw Object.assign(new Error(`--env wants KEY=VALUE, got ${kv}`), { usage: true });
      env[kv.slice(0, i)] = kv.slice(i + 1);
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
      },
      (j) =>
        `${j.id} running on ${j.host}${j.network.mode === 'job' ? ` at ${j.network.address}` : ''} (${j.placement})`,
      undefined,
      RUN_FLAGS,
    );
  },
};
