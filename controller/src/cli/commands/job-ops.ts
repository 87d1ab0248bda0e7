/** `drover inspect|logs|signal|stop|preflight JOB`: per-job commands forwarded to its agent. */
import type { CommandModule } from 'yargs';
import { JOB_SIGNALS } from '@drover/protocol';
import { callController, type GlobalArgs } from '../context.js';
import { table } from '../output.js';

type JobArgs = GlobalArgs & { job: string };

export const inspectCommand: CommandModule<GlobalArgs, JobArgs> = {
  command: 'inspect <job>',
  describe: 'Show a job and its processes',
  builder: (y) => y.positional('job', { type: 'string', demandOption: true }),
  handler: async (argv) => {
    await callController(argv, 'inspect', { jobId: argv.job }, (j) =>
      [
        `${j.id} (${j.name}) on ${j.host}: ${j.state}${j.restoredFrom ? `, restored from ${j.restoredFrom}` : ''}`,
        `command: ${j.command.join(' ')}`,
        j.network?.mode === 'job'
          ? `network: ${j.network.address}/${j.network.prefixLength} (mac ${j.network.mac}${j.network.gateway ? `, gateway ${j.network.gateway}` : ''})`
          : "network: the host's",
        table(
          ['PID', 'PID IN JOB', 'STATE', 'COMMAND'],
          j.processes.map((p) => [
            String(p.pid),
            String(p.nspid.at(-1)),
            p.state,
            p.cmdline.join(' ').slice(0, 70),
          ]),
        ),
      ].join('\n'),
    );
  },
};

export const logsCommand: CommandModule<
  GlobalArgs,
  JobArgs & { stderr: boolean | undefined; bytes: number | undefined }
> = {
  command: 'logs <job>',
  describe: "Print a job's output",
  builder: (y) =>
    y
      .positional('job', { type: 'string', demandOption: true })
      .option('stderr', { type: 'boolean', describe: 'stderr instead of stdout' })
      .option('bytes', { type: 'number', describe: 'last N bytes (default 64 KiB)' }),
  handler: async (argv) => {
    await callController(
      argv,
      'logs',
      {
        jobId: argv.job,
        ...(argv.stderr ? { stream: 'stderr' as const } : {}),
        ...(argv.bytes ? { tailBytes: argv.bytes } : {}),
      },
      (l) => l.data.replace(/\n$/, ''),
    );
  },
};

export const signalCommand: CommandModule<
  GlobalArgs,
  JobArgs & { signal: (typeof JOB_SIGNALS)[number] }
> = {
  command: 'signal <job> <signal>',
  describe: "Send a signal to a job's command (SIGKILL ends the whole job)",
  builder: (y) =>
    y
      .positional('job', { type: 'string', demandOption: true })
      .positional('signal', { choices: JOB_SIGNALS, demandOption: true }),
  handler: async (argv) => {
    await callController(
      argv,
      'signal',
      { jobId: argv.job, signal: argv.signal },
      (j) => `${argv.signal} sent to ${j.id} on ${j.host}`,
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
      { jobId: argv.job },
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
      { jobId: argv.job, ...(argv.to ? { to: argv.to } : {}) },
      (p) =>
        p.ok
          ? `${p.jobId} can move${argv.to ? ` to ${argv.to}` : ''}`
          : p.reasons.map((x) => `${x.code}: ${x.message}`).join('\n'),
    );
    if (!r.ok) process.exitCode = 4;
  },
};
