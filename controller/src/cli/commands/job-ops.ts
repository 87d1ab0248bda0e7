/**
 * `drover inspect|logs|signal|stop|preflight JOB`: per-job commands forwarded to its agent. JOB
 * is a job's id or the name it was given at `run`.
 */
import type { CommandModule } from 'yargs';
import { ShownFailure, UsageError } from '@drover/cli-kit';
import { ErrorCode } from '@drover/common';
import { formatCheckpointOptions, JOB_SIGNALS, parseSignal } from '@drover/protocol';
import { callController, type GlobalArgs } from '../context.js';
import { resolveJob } from '../job-ref.js';
import { followLogs, parseSince } from '../logs-follow.js';
import { commandLine, table } from '../output.js';

type JobArgs = GlobalArgs & { job: string };

export const inspectCommand: CommandModule<GlobalArgs, JobArgs> = {
  command: 'inspect <job>',
  describe: 'Show a job (by id or name) and its processes, or how it ended',
  builder: (y) => y.positional('job', { type: 'string', demandOption: true }),
  handler: async (argv) => {
    await callController(
      argv,
      'inspect',
      async (ask) => ({ jobId: await resolveJob(ask, argv.job) }),
      (j) =>
        [
          `${j.id} (${j.name}) on ${j.host}: ${j.state}${j.restoredFrom ? `, restored from ${j.restoredFrom}` : ''}`,
          `command: ${commandLine(j.command)}`,
          j.network?.mode === 'job'
            ? `network: ${j.network.address}/${j.network.prefixLength} (mac ${j.network.mac}${j.network.gateway ? `, gateway ${j.network.gateway}` : ''})`
            : "network: the host's",
          `main process: ${j.mainPid === null ? 'none' : `${j.mainPid} (${j.mainPidInside} in the job)`}` +
            `; lives until ${j.until === 'all' ? 'no process is left' : 'its main process ends'}` +
            (j.mainPidfile ? `; main from ${j.mainPidfile}` : '') +
            (j.tty ? '; on a terminal' : ''),
          `checkpoint options: ${formatCheckpointOptions(j.checkpointOptions) || 'defaults'}` +
            (j.effectiveCheckpointOptions
              ? ` (next dump: ${formatCheckpointOptions(j.effectiveCheckpointOptions)})`
              : ''),
          j.exitedAt
            ? `ended ${j.exitedAt}: ${j.signal ? `killed by ${j.signal}` : `exit code ${j.exitCode ?? 'unknown'}`}${j.note ? ` (${j.note})` : ''}`
            : j.note
              ? `note: ${j.note}`
              : '',
          table(
            ['PID', 'PID IN JOB', 'STATE', 'COMMAND'],
            j.processes.map((p) => [
              String(p.pid),
              String(p.nspid.at(-1)),
              p.state,
              p.cmdline.join(' ').slice(0, 70),
            ]),
          ),
        ]
          .filter((l) => l !== '')
          .join('\n'),
    );
  },
};

export const logsCommand: CommandModule<
  GlobalArgs,
  JobArgs & {
    stderr: boolean | undefined;
    bytes: number | undefined;
    follow: boolean;
    since: string | undefined;
    tail: number | undefined;
  }
> = {
  command: 'logs <job>',
  describe: "Print a job's output (-f follows it, across migrations, until the job ends)",
  builder: (y) =>
    y
      .positional('job', { type: 'string', demandOption: true })
      .option('stderr', { type: 'boolean', describe: 'stderr instead of stdout' })
      .option('follow', {
        alias: 'f',
        type: 'boolean',
        default: false,
        describe: 'keep printing new output',
      })
      .option('since', {
        type: 'string',
        describe: 'only output since a time: 10s, 5m, 2h, 1d, or an ISO time (precise to ~1 s)',
      })
      .option('tail', { type: 'number', describe: 'only the last N lines' })
      .option('bytes', { type: 'number', describe: 'last N bytes (default 64 KiB)' }),
  handler: async (argv) => {
    if (argv.tail !== undefined && !(Number.isInteger(argv.tail) && argv.tail >= 0)) {
      throw new UsageError(`--tail wants a number of lines, got ${argv.tail}`);
    }
    const range = {
      ...(argv.stderr ? { stream: 'stderr' as const } : {}),
      ...(argv.bytes ? { tailBytes: argv.bytes } : {}),
      ...(argv.tail !== undefined ? { tailLines: argv.tail } : {}),
      ...(argv.since !== undefined ? { sinceMs: parseSince(argv.since) } : {}),
    };
    if (argv.follow) {
      await followLogs(argv, argv.job, range, process.stdout);
      return;
    }
    await callController(
      argv,
      'logs',
      async (ask) => ({ jobId: await resolveJob(ask, argv.job), ...range }),
      (l) => l.data.replace(/\n$/, ''),
      undefined,
      { tailBytes: '--bytes', tailLines: '--tail', sinceMs: '--since' },
    );
  },
};

export const signalCommand: CommandModule<GlobalArgs, JobArgs & { signal: string }> = {
  command: 'signal <job> <signal>',
  describe:
    "Send a signal to a job's command: USR1, sigusr1, SIGUSR1, 10, SIGRTMIN+2 (SIGKILL ends the whole job)",
  builder: (y) =>
    y.positional('job', { type: 'string', demandOption: true }).positional('signal', {
      type: 'string',
      demandOption: true,
      describe: `a name with or without SIG in any case, a number, or SIGRTMIN+N (e.g. ${JOB_SIGNALS.slice(0, 4).join(', ')})`,
    }),
  handler: async (argv) => {
    let signal: string;
    try {
      signal = parseSignal(String(argv.signal)).name;
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    await callController(
      argv,
      'signal',
      async (ask) => ({ jobId: await resolveJob(ask, argv.job), signal }),
      (j) => `${signal} sent to ${j.id} on ${j.host}`,
    );
  },
};

export const stopCommand: CommandModule<GlobalArgs, JobArgs> = {
  command: 'stop <job>',
  describe: 'Stop a job (SIGTERM)',
  builder: (y) => y.positional('job', { type: 'string', demandOption: true }),
  handler: async (argv) => {
    await callController(
      argv,
      'stop',
      async (ask) => ({ jobId: await resolveJob(ask, argv.job) }),
      (j) => `SIGTERM sent to ${j.id} on ${j.host}`,
    );
  },
};

export const preflightCommand: CommandModule<GlobalArgs, JobArgs & { to: string | undefined }> = {
  command: 'preflight <job>',
  describe: 'Can this job be checkpointed and moved? Says why not.',
  builder: (y) =>
    y.positional('job', { type: 'string', demandOption: true }).option('to', { type: 'string' }),
  handler: async (argv) => {
    const r = await callController(
      argv,
      'preflight',
      async (ask) => ({
        jobId: await resolveJob(ask, argv.job),
        ...(argv.to ? { to: argv.to } : {}),
      }),
      (p) =>
        p.ok
          ? `${p.jobId} can move${argv.to ? ` to ${argv.to}` : ''}`
          : p.reasons.map((x) => `${x.code}: ${x.message}`).join('\n'),
    );
    // Cannot move: refused (4), as when a migration is refused by preflight.
    if (!r.ok) throw new ShownFailure(`${r.jobId} cannot move`, ErrorCode.FailedPrecondition);
  },
};
