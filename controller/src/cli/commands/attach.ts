/**
 * `drover attach JOB`: the terminal of a job run with `-t`, from here. What the job writes there
 * is printed as it comes; each line typed is sent as its input (`tty-write`). Ctrl-D or Ctrl-C
 * detaches; the job runs on. Output already written is in `drover logs`.
 */
import type { CommandModule } from 'yargs';
import type { ControllerClient } from '@drover/bus';
import { DroverError, ErrorCode } from '@drover/common';
import { TTY_WRITE_MAX } from '@drover/protocol';
import { withController, type GlobalArgs } from '../context.js';

type Args = GlobalArgs & { job: string };

const POLL_MS = 200;

/** The job's stdout bytes past `offset`, and where its log ends now. */
async function newOutput(
  client: ControllerClient,
  jobId: string,
  offset: number,
): Promise<{ data: string; size: number }> {
  let size = (await client.call('logs', { jobId, tailBytes: 1 })).sizeBytes;
  for (;;) {
    if (size <= offset) return { data: '', size: Math.max(size, offset) };
    const want = Math.min(size - offset, 1024 * 1024);
    const r = await client.call('logs', { jobId, tailBytes: want });
    // The log grew between the two calls: ask again for exactly what is new.
    if (r.sizeBytes === size || want === 1024 * 1024) return { data: r.data, size: r.sizeBytes };
    size = r.sizeBytes;
  }
}

export const attachCommand: CommandModule<GlobalArgs, Args> = {
  command: 'attach <job>',
  describe: 'Attach to the terminal of a job run with -t (lines you type are its input)',
  builder: (y) => y.positional('job', { type: 'string', demandOption: true }),
  handler: async (argv) => {
    await withController(argv, async (client) => {
      const job = await client.call('inspect', { jobId: argv.job });
      if (!job.tty) {
        throw new DroverError(
          ErrorCode.FailedPrecondition,
          `job ${job.id} has no terminal (run it with drover run -t)`,
        );
      }
      let offset = (await client.call('logs', { jobId: job.id, tailBytes: 1 })).sizeBytes;
      let detached = false;
      let sending = Promise.resolve();
      process.stdin.on('data', (chunk: Buffer) => {
        for (let i = 0; i < chunk.length; i += TTY_WRITE_MAX) {
          const data = chunk.subarray(i, i + TTY_WRITE_MAX).toString('utf8');
          sending = sending.then(async () => {
            await client.call('tty-write', { jobId: job.id, data });
          });
        }
      });
      process.stdin.once('end', () => (detached = true));
      process.once('SIGINT', () => (detached = true));
      for (let n = 0; !detached; n++) {
        const out = await newOutput(client, job.id, offset);
        if (out.data) process.stdout.write(out.data);
        offset = out.size;
        // Once a second: is the job still running (wherever it runs now)?
        if (n % 5 === 4) {
          // A job between hosts cannot be found for a moment: ask again next time.
          const now = await client.call('inspect', { jobId: job.id }).catch(() => null);
          if (now && now.state !== 'running' && now.state !== 'migrating') {
            process.stderr.write(`\n(job ${job.id} is ${now.state})\n`);
            break;
          }
        }
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
      await sending;
      process.stdin.pause();
    });
  },
};
