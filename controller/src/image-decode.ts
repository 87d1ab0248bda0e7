/**
 * `drover images inspect NAME --job J`: what is inside one job's image of a set — its process
 * tree, open files, sockets and memory — decoded from the sealed set by an agent that gets the
 * set's key for this one call (the job's own host when it answers: it checkpointed the job).
 */
import { DroverError, ErrorCode } from '@drover/common';
import type { ControllerReplies, ControllerRequest, ImageSetJob } from '@drover/protocol';
import type { ClusterContext } from './cluster-context.js';
import { readSet, setKey } from './image-sets.js';

/** Decoding a large image reads all of its pages: give it time. */
const DECODE_TIMEOUT_MS = 5 * 60_000;

/** Decode job `req.job` (its id or name) of image set `req.name`. */
export async function decodeSetImage(
  ctx: Pick<ClusterContext, 'sets' | 'keys' | 'hosts' | 'agent'>,
  req: ControllerRequest<'images-decode'>,
): Promise<ControllerReplies['images-decode']> {
  const set = await readSet(ctx, req.name);
  if (set.state !== 'complete') {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `image set ${set.name} is not complete yet (${set.state}); its images cannot be read`,
      { details: { name: set.name, state: set.state } },
    );
  }
  const job = pickJob(set.jobs, req.job, set.name);
  const key = await setKey(ctx, set.name);
  const reachable = ctx.hosts().filter((h) => h.reachable);
  const host = reachable.find((h) => h.host === job.host) ?? reachable[0];
  if (!host) {
    throw new DroverError(ErrorCode.Unavailable, 'no reachable host to read the image', {
      retryable: true,
    });
  }
  const contents = await ctx.agent(
    host.host,
    'image-decode',
    { prefix: `${set.name}/${job.jobId}`, key, files: job.files },
    DECODE_TIMEOUT_MS,
  );
  return { ...contents, set: set.name, jobId: job.jobId, name: job.name, host: job.host };
}

/** The set's job named by id, else by its (unique) name. */
function pickJob(jobs: readonly ImageSetJob[], ref: string, set: string): ImageSetJob {
  const byId = jobs.find((j) => j.jobId === ref);
  if (byId) return byId;
  const named = jobs.filter((j) => j.name === ref);
  if (named.length === 1) return named[0]!;
  if (named.length > 1) {
    throw new DroverError(
      ErrorCode.InvalidArgument,
      `${named.length} jobs of image set ${set} are named ${ref} (${named.map((j) => j.jobId).join(', ')}); give an id`,
      { details: { name: ref } },
    );
  }
  throw new DroverError(
    ErrorCode.NotFound,
    `image set ${set} has no job ${ref} (it holds ${jobs.map((j) => `${j.jobId} (${j.name})`).join(', ')})`,
    { details: { set, job: ref } },
  );
}
