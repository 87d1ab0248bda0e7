/**
 * Input for a job run with a terminal (`drover run -t`): the bytes `drover attach` sends are
 * written to the FIFO its terminal reads (`tty-in` in the job's directory, made by the job's
 * wrapper, job-init.ts). Its output is the job's stdout log.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import { JobFiles, type JobRecord } from './job-store.js';

/**
 * Write `data` to the terminal of job `r`. Never through a link (the job owns its directory:
 * O_NOFOLLOW, and it must be a FIFO), never blocking (a full pipe is UNAVAILABLE, retryable).
 */
export async function writeTtyInput(r: JobRecord, data: string): Promise<number> {
  if (r.tty !== true) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `job ${r.id} has no terminal (run it with drover run -t)`,
      { details: { jobId: r.id } },
    );
  }
  const path = join(r.jobDir, JobFiles.ttyIn);
  let fh;
  try {
    fh = await open(path, constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  } catch (err) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `job ${r.id}'s terminal does not take input now (${(err as NodeJS.ErrnoException).code})`,
      { cause: err, details: { jobId: r.id } },
    );
  }
  try {
    if (!(await fh.stat()).isFIFO()) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `job ${r.id}'s terminal input is not a FIFO`,
        {
          details: { jobId: r.id },
        },
      );
    }
    const buf = Buffer.from(data, 'utf8');
    try {
      const { bytesWritten } = await fh.write(buf);
      return bytesWritten;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      throw new DroverError(
        ErrorCode.Unavailable,
        `job ${r.id}'s terminal is not reading its input`,
        {
          retryable: true,
          cause: err,
          details: { jobId: r.id },
        },
      );
    }
  } finally {
    await fh.close();
  }
}
