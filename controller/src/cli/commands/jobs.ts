/**
 * `drover jobs [--host H] [--all] [--wide] [--strict]`: each job once, where it lives now (`--all`: ended
 * jobs and the hosts a job moved away from too; `--wide`: the job's address); `drover jobs rm
 * JOB...` and `drover jobs prune` remove ended jobs. Hosts that did not answer are named
 * on stderr (`--strict`: and exit 7).
 */
import type { Argv, CommandModule } from 'yargs';
import type { ClusterJob, RemovedJob } from '@drover/protocol';
import { callController, type GlobalArgs } from '../context.js';
import { resolveJobs } from '../job-ref.js';
import { commandLine, table } from '../output.js';
import { reportUnanswered, strictOption } from '../unanswered.js';

type Args = GlobalArgs & {
  host: string | undefined;
  all: boolean;
  wide: boolean | undefined;
  strict: boolean;
};

/** States in which a job's processes exist (the PID column means something). */
const LIVE = new Set(['starting', 'running', 'frozen', 'checkpointing', 'migrating']);

/** How a job ended, for the EXIT column: its exit code, or the signal that killed it. */
function exitOf(j: ClusterJob): string {
  if (j.exitCode !== null) return String(j.exitCode);
  if (j.signal !== null) return j.signal;
  return '-';
}

function removedTable(removed: readonly RemovedJob[]): string {
  if (removed.length === 0) return 'nothing to remove';
  return table(
    ['REMOVED', 'NAME', 'HOST', 'STATE'],
    removed.map((r) => [r.jobId, r.name, r.host, r.state]),
  );
}

const rm: CommandModule<GlobalArgs, GlobalArgs & { jobs: string[] }> = {
  command: 'rm <jobs..>',
  describe: 'Remove ended jobs (by id or name) from every host; a live job is refused',
  builder: (y) => y.positional('jobs', { type: 'string', array: true, demandOption: true }),
  handler: async (argv) => {
    await callController(
      argv,
      'jobs-remove',
      async (ask) => ({ jobIds: await resolveJobs(ask, argv.jobs.map(String)) }),
      (r) => removedTable(r.removed),
    );
  },
};

const prune: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'prune',
  describe: 'Remove every ended job from every host',
  handler: async (argv) => {
    await callController(argv, 'jobs-prune', {}, (r) => removedTable(r.removed));
  },
};

export const jobsCommand: CommandModule<GlobalArgs, Args> = {
  command: 'jobs',
  describe: 'List jobs, each once where it runs now (rm JOB..., prune: remove ended ones)',
  builder: (y: Argv<GlobalArgs>) =>
    strictOption(y)
      .option('host', { type: 'string', describe: 'only this host' })
      .option('all', {
        type: 'boolean',
        default: false,
        describe: 'also ended jobs, and the hosts a job moved away from',
      })
      .option('wide', { type: 'boolean', describe: 'more columns: the job address' })
      .command(rm)
      .command(prune) as unknown as Argv<Args>,
  handler: async (argv) => {
    const reply = await callController(
      argv,
      'jobs',
      { ...(argv.host ? { host: argv.host } : {}), ...(argv.all ? { all: true } : {}) },
      (r) =>
        table(
          [
            'JOB',
            'NAME',
            'HOST',
            'STATE',
            ...(argv.wide ? ['ADDRESS'] : []),
            'PID',
            'EXIT',
            'COMMAND',
          ],
          r.jobs.map((j) => [
            j.id,
            j.name,
            j.host,
            j.state,
            ...(argv.wide ? [j.network?.mode === 'job' ? j.network.address : 'host'] : []),
            // The host's PID of the command (what ps and kill on that host see), while it runs.
            LIVE.has(j.state) ? String(j.mainPid ?? j.rootPid ?? '-') : '-',
            exitOf(j),
            commandLine(j.command).slice(0, 60),
          ]),
        ),
    );
    reportUnanswered(reply, 'their jobs are not listed', argv.strict);
  },
};
