/**
 * The image-set catalogue: named, sealed consistent cuts of a set of jobs (their records, keys and
 * objects in JetStream). Listing, reading, deleting, retention, and the key each set is sealed
 * with. Cluster checkpoints make sets (cluster-checkpoint.ts), restores read them
 * (cluster-restore.ts).
 */
import type { ObjectFiles } from '@drover/bus';
import { DroverError, ErrorCode, type Logger } from '@drover/common';
import {
  fitBytes,
  type ControllerReplies,
  type ControllerRequest,
  type ImageSet,
  type OperationRecord,
} from '@drover/protocol';
import type { Records } from './op-record.js';

/** What the catalogue is kept in. */
export interface ImageSetContext {
  /** opId → the operation's record (a set in use by a running operation is not deleted). */
  ops: Pick<Records<OperationRecord>, 'list'>;
  sets: Records<ImageSet>;
  /** set name → its AES-256 key (base64): only the controller reads it, agents get it per call. */
  keys: Records<{ key: string }>;
  objects: Pick<ObjectFiles, 'deletePrefix'>;
  log: Logger;
  /** Complete image sets kept; the oldest beyond this are deleted when a new one completes. */
  retention: number;
}

/** Image sets, newest first. */
export async function listSets(ctx: Pick<ImageSetContext, 'sets'>): Promise<ImageSet[]> {
  const all = [...(await ctx.sets.list()).values()].map((v) => v.value);
  return all.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
}

/** Image sets, newest first, a page at a time (the cursor is a set's name). */
export async function setsPage(
  ctx: Pick<ImageSetContext, 'sets'>,
  req: ControllerRequest<'images-list'>,
): Promise<ControllerReplies['images-list']> {
  const sets = await listSets(ctx);
  const at = req.after === undefined ? -1 : sets.findIndex((s) => s.name === req.after);
  if (req.after !== undefined && at < 0) {
    throw new DroverError(ErrorCode.NotFound, `no image set ${req.after} to page after`, {
      details: { after: req.after },
    });
  }
  const rest = sets.slice(at + 1);
  const p = fitBytes(rest.slice(0, req.limit ?? rest.length));
  const more = p.cut || (req.limit !== undefined && rest.length > req.limit);
  return { sets: p.items, next: more ? (p.items.at(-1)?.name ?? null) : null };
}

/** Image set `name`; NOT_FOUND when there is none. */
export async function readSet(ctx: Pick<ImageSetContext, 'sets'>, name: string): Promise<ImageSet> {
  const s = await ctx.sets.get(name);
  if (!s) {
    throw new DroverError(ErrorCode.NotFound, `no image set ${name} (see drover images ls)`, {
      details: { name },
    });
  }
  return s.value;
}

/** Delete a set's objects and its record; refused while an operation uses it. */
export async function deleteSet(
  ctx: ImageSetContext,
  name: string,
): Promise<{ deleted: boolean; objects: number }> {
  await readSet(ctx, name);
  await refuseIfBusy(ctx, name);
  const objects = await ctx.objects.deletePrefix(`${name}/`);
  await ctx.sets.delete(name);
  await ctx.keys.delete(name);
  ctx.log.info('image set deleted', { set: name, objects });
  return { deleted: true, objects };
}

/** Keep the newest `retention` complete sets. */
export async function applyRetention(ctx: ImageSetContext): Promise<void> {
  const complete = (await listSets(ctx)).filter((s) => s.state === 'complete');
  for (const s of complete.slice(ctx.retention)) {
    ctx.log.info('image set past retention', { set: s.name, retention: ctx.retention });
    await deleteSet(ctx, s.name);
  }
}

/** The key image set `name` is sealed with. */
export async function setKey(ctx: Pick<ImageSetContext, 'keys'>, name: string): Promise<string> {
  const k = await ctx.keys.get(name);
  if (!k) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `the key of image set ${name} is missing; its images cannot be stored or read`,
      { details: { name } },
    );
  }
  return k.value.key;
}

/** FAILED_PRECONDITION while a running operation uses set `name`. */
export async function refuseIfBusy(ctx: Pick<ImageSetContext, 'ops'>, name: string): Promise<void> {
  const busy = [...(await ctx.ops.list()).values()]
    .map((v) => v.value)
    .find((o) => o.imageSet === name && o.state === 'running');
  if (busy) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `image set ${name} is in use by ${busy.kind} ${busy.opId}; wait for it (drover status ${busy.opId})`,
      { details: { name, opId: busy.opId } },
    );
  }
}
