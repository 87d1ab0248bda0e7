/**
 * Job references as operators type them: a job's id, or the `--name` it was given at `run`.
 * A name that several live jobs share is refused with their ids; a live job wins over ended
 * ones of the same name (a job re-run under its old name).
 */
import { DroverError, ErrorCode } from '@drover/common';
import type { ClusterJob } from '@drover/protocol';
import type { Ask } from './context.js';

const LIVE = new Set(['running', 'frozen', 'checkpointing', 'migrating', 'starting']);

/** The id `ref` names among `records` (every host's, ended jobs included). */
export function pickJob(records: readonly ClusterJob[], ref: string): string {
  if (records.some((j) => j.id === ref)) return ref;
  const named = records.filter((j) => j.name === ref);
  const ids = (list: readonly ClusterJob[]): string[] => [...new Set(list.map((j) => j.id))];
  const live = ids(named.filter((j) => LIVE.has(j.state)));
  const all = ids(named);
  if (live.length === 1) return live[0]!;
  if (live.length === 0 && all.length === 1) return all[0]!;
  if (all.length === 0) return ref; // unknown: the controller says so, in its words
  const among = live.length > 1 ? live : all;
  const where = among.map((id) => {
    const j = named.find((x) => x.id === id && (live.length <= 1 || LIVE.has(x.state)))!;
    return `${id} (${j.state} on ${j.host})`;
  });
  throw new DroverError(
    ErrorCode.InvalidArgument,
    `${among.length} jobs are named ${ref}: ${where.join(', ')}; give an id`,
    { details: { name: ref, ids: among } },
  );
}

/** Resolve `ref` (an id or a name) to a job id, asking the controller for every record. */
export async function resolveJob(ask: Ask, ref: string): Promise<string> {
  return pickJob((await ask('jobs', { all: true })).jobs, ref);
}

/** Resolve several references with one question. */
export async function resolveJobs(ask: Ask, refs: readonly string[]): Promise<string[]> {
  const { jobs } = await ask('jobs', { all: true });
  return refs.map((r) => pickJob(jobs, r));
}
