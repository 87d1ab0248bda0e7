/**
 * `drover attach JOB`: the terminal of a job run with `-t`, from here. What the job writes there
 * is printed as it comes; each line typed is sent as its input (`tty-write`). Ctrl-D or Ctrl-C
 * detaches; the job runs on. Output already written is in `drover logs`.
 */
import type { CommandModule } from 'yargs';
import { DroverError, ErrorCode, isDroverError } from '@drover/common';
import { TTY_WRITE_MAX } from '@drover/protocol';
import { withController, type GlobalArgs } from '../context.js';
import { resolveJob } from '../job-ref.js';

type Args = GlobalArgs & { job: string };

const POLL_MS = 200;

/** A read that failed because the job is between hosts (or its agent blinked): try again. */
function transient(err: unknown): boolean {
  return (
    isDroverError(err, ErrorCode.Unavailable) ||
    isDroverError(err, ErrorCode.Timeout) ||
    isDroverError(err, ErrorCode.NotFound)
  );
}

export const attachCommand: CommandModule<GlobalArgs, Args> = {
  command: 'attach <job>',
  describe: 'Attach to the terminal of a job run with -t (lines you type are its input)',
  builder: (y) => y.positional('job', { type: 'string', demandOption: true }),
  handler: async (argv) => {
    await withController(argv, async (_bus, ask) => {
      const jobId = await resolveJob(ask, argv.job);
      const job = await ask('inspect', { jobId });
      if (!job.tty) {
        throw new DroverError(
          ErrorCode.FailedPrecondition,
          `job ${job.id} has no terminal (run it with drover run -t)`,
        );
      }
      // From now on: what is already there is in `drover logs`.
      let offset = (await ask('logs', { jobId, tailBytes: 1 })).sizeBytes;
      let detached = false;
      let sending = Promise.resolve();
      process.stdin.on('data', (chunk: Buffer) => {
        for (let i = 0; i < chunk.length; i += TTY_WRITE_MAX) {
          const data = chunk.subarray(i, i + TTY_WRITE_MAX).toString('utf8');
          sending = sending.then(async () => {
            await ask('tty-write', { jobId, data });
          });
        }
      });
      process.stdin.once('end', () => (detached = true));
      process.once('SIGINT', () => (detached = true));
      while (!detached) {
        const chunk = await ask('logs', { jobId, fromByte: offset }).catch((err: unknown) => {
          if (transient(err)) return null;
          throw err;
        });
        if (chunk) {
          if (chunk.data) process.stdout.write(chunk.data);
          offset = chunk.nextByte ?? chunk.sizeBytes;
          if (
            chunk.state !== undefined &&
            !['running', 'migrating', 'frozen', 'checkpointing'].includes(chunk.state)
          ) {
            process.stderr.write(`\n(job ${jobId} is ${chunk.state})\n`);
            break;
          }
          if (chunk.truncated) continue;
        }
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
      await sending;
      process.stdin.pause();
    });
  },
};
