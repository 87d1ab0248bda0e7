/** Adopting an existing process subtree as a job (the seed's "subtree of a process hierarchy"). */
import { JobCgroup } from '@drover/cgroup';
import { DroverError, ErrorCode, newId, type Logger } from '@drover/common';
import { processTree, sessionId, startTicks } from '@drover/native';
import { JobKind, JobState, type AgentRequest, type JobInfo } from '@drover/protocol';
import type { AgentConfig } from './config.js';
import { blankRecord, toJobInfo, type JobRecord, type JobStore } from './job-store.js';
import type { Supervisor } from './supervisor.js';

/** What adopting a tree uses of the agent. */
export interface AdoptHost {
  readonly config: Pick<AgentConfig, 'hostId' | 'cgroupParent'>;
  readonly log: Logger;
  readonly store: JobStore;
  readonly supervisor: Pick<Supervisor, 'watch'>;
  withJob<T>(jobId: string, fn: () => Promise<T>): Promise<T>;
  /** Publish a job's state as an event. */
  event(r: JobRecord): void;
}

/**
 * Take the live tree rooted at `req.pid` as a job: moved into a job cgroup (so it can be frozen),
 * supervised, checkpointable. Its exit status is not Drover's to know (it is not our child), and
 * its restore needs its PIDs free, which restore checks before CRIU runs.
 */
export async function adoptTree(agent: AdoptHost, req: AgentRequest<'adopt'>): Promise<JobInfo> {
  const pid = req.pid;
  const ancestors = agentAncestors();
  if (ancestors.has(pid)) {
    throw new DroverError(
      ErrorCode.InvalidArgument,
      `PID ${pid} is the agent or one of its ancestors`,
    );
  }
  const tree = processTree(pid);
  if (tree.length === 0 || tree[0]!.state === 'Z') {
    throw new DroverError(ErrorCode.NotFound, `no process ${pid}`, { details: { pid } });
  }
  if (tree[0]!.cmdline.length === 0) {
    throw new DroverError(ErrorCode.InvalidArgument, `PID ${pid} is a kernel thread`);
  }
  const id = newId('job');
  return agent.withJob(id, async () => {
    const jobDir = await agent.store.createJobDir(id);
    const cg = await JobCgroup.create({
      jobId: id,
      parent: agent.config.cgroupParent,
      stateDir: jobDir,
      logger: agent.log,
    });
    await moveTreeInto(cg, pid);
    const sid = sessionId(pid);
    const record: JobRecord = {
      ...blankRecord(id, agent.config.hostId, jobDir),
      name: req.name ?? tree[0]!.cmdline[0]!,
      kind: JobKind.adopted,
      state: JobState.running,
      command: tree[0]!.cmdline,
      cwd: '/',
      rootPid: pid,
      rootStartTicks: startTicks(pid),
      mainPid: pid,
      mainPidInside: pid,
      // A session led from outside the tree needs --shell-job.
      shellJob: sid === null || !tree.some((p) => p.pid === sid),
      note: 'adopted: its exit status is not known to Drover',
    };
    await agent.store.save(record);
    agent.supervisor.watch(record);
    agent.event(record);
    return toJobInfo(record);
  });
}

/**
 * Move a live tree into a job cgroup. Repeated until the whole tree is inside: a process forked
 * by a member that was not yet moved is born outside, and a freeze would miss it.
 */
async function moveTreeInto(cg: JobCgroup, pid: number): Promise<void> {
  for (let round = 0; round < 50; round++) {
    const tree = processTree(pid).filter((p) => p.state !== 'Z');
    for (const p of tree) await cg.addProcess(p.pid).catch(() => undefined); // raced exits
    const inside = new Set(await cg.pids());
    if (processTree(pid).every((p) => p.state === 'Z' || inside.has(p.pid))) return;
  }
  throw new DroverError(
    ErrorCode.FailedPrecondition,
    `process tree ${pid} keeps escaping its cgroup`,
    {
      details: { pid },
    },
  );
}

/** PIDs of this process and its ancestors (never adoptable). */
function agentAncestors(): Set<number> {
  const out = new Set<number>([1]);
  let pid = process.pid;
  for (let i = 0; i < 64 && pid > 1; i++) {
    out.add(pid);
    const t = processTree(pid)[0];
    if (!t) break;
    pid = t.ppid;
  }
  return out;
}
