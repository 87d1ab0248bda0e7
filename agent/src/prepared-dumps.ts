/**
 * Dumps readied before a cluster's cut (`dumps-prepare`): for each, the job's record read, its
 * image directory made and its dump plan drawn (the process tree, the largest ghost file, the
 * mounts) while the job still runs, so that its dump in the cut starts from them
 * (checkpoint.ts). What the cut does not take goes at the thaw, on a failed cut, or after a
 * minute.
 */
import type { JobCgroup } from '@drover/cgroup';
import type { AgentRequest, AgentReplies } from '@drover/protocol';
import type { CheckpointHost } from './checkpoint.js';
import { planJobDump, type JobDumpPlan } from './job-image.js';
import type { JobRecord } from './job-store.js';

/** One dump readied before the cut. */
export interface PreparedDump {
  jobId: string;
  /** The job's root when it was readied: the plan holds for that process tree only. */
  rootPid: number | null;
  rootStartTicks: number | null;
  /** The image's directory, made. */
  dir: string;
  cg: JobCgroup;
  plan: JobDumpPlan;
}

/** How long a readied dump waits for its cut. */
const TTL_MS = 60_000;

/** The dumps readied on this host, by image id. */
export class PreparedDumps {
  readonly #ready = new Map<string, { dump: PreparedDump; timer: NodeJS.Timeout }>();

  /** `drop` removes an image's directory (one whose dump never came). */
  constructor(
    private readonly drop: (imageId: string) => Promise<unknown>,
    private readonly ttlMs = TTL_MS,
  ) {}

  get size(): number {
    return this.#ready.size;
  }

  add(imageId: string, dump: PreparedDump): void {
    const had = this.#ready.get(imageId);
    if (had) clearTimeout(had.timer);
    const timer = setTimeout(() => void this.discard(imageId), this.ttlMs);
    timer.unref();
    this.#ready.set(imageId, { dump, timer });
  }

  /**
   * The dump readied for `imageId`, no longer waiting. `fits` says whether its plan holds for `r`
   * (the same job, the same root process); its directory is the image's either way.
   */
  take(imageId: string, r: JobRecord): { dump: PreparedDump; fits: boolean } | null {
    const had = this.#ready.get(imageId);
    if (!had) return null;
    clearTimeout(had.timer);
    this.#ready.delete(imageId);
    const d = had.dump;
    const fits =
      d.jobId === r.id && d.rootPid === r.rootPid && d.rootStartTicks === r.rootStartTicks;
    return { dump: d, fits };
  }

  /** Every dump still waiting goes, its directory with it. */
  async drain(): Promise<void> {
    await Promise.all([...this.#ready.keys()].map((id) => this.discard(id)));
  }

  private async discard(imageId: string): Promise<void> {
    const had = this.#ready.get(imageId);
    if (!had) return;
    clearTimeout(had.timer);
    this.#ready.delete(imageId);
    await this.drop(imageId).catch(() => undefined);
  }
}

/**
 * `dumps-prepare`: ready each dump of `req` that can be (a job not live here, or an image that
 * exists already, is left to its dump in the cut, which decides as it always did).
 */
export async function prepareDumps(
  agent: Pick<CheckpointHost, 'store' | 'images' | 'config' | 'cgroupOf' | 'log'> & {
    readonly preparedDumps: PreparedDumps;
  },
  req: AgentRequest<'dumps-prepare'>,
): Promise<AgentReplies['dumps-prepare']> {
  let prepared = 0;
  for (const d of req.dumps) {
    try {
      const r = await agent.store.loadLive(d.jobId);
      const [cg, plan] = await Promise.all([
        agent.cgroupOf(r),
        planJobDump(r, agent.config.checkpointOptions),
      ]);
      const dir = await agent.images.create(d.imageId);
      agent.preparedDumps.add(d.imageId, {
        jobId: r.id,
        rootPid: r.rootPid,
        rootStartTicks: r.rootStartTicks,
        dir,
        cg,
        plan,
      });
      prepared++;
    } catch (err) {
      agent.log.debug('dump not readied before the cut', { jobId: d.jobId, err });
    }
  }
  return { prepared };
}
