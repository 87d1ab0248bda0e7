/** Starting a new job: its directory, cgroup, namespaces, network and record, all or nothing. */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { JobCgroup } from '@drover/cgroup';
import { DroverError, ErrorCode, toDroverError, type Logger } from '@drover/common';
import { JobKind, JobState, type AgentRequest, type JobInfo } from '@drover/protocol';
import type { AgentConfig } from './config.js';
import { createHostsFile, type NameEntry } from './job-hosts.js';
import {
  addressOf,
  attachJob,
  checkJobBridge,
  jobNetworkFor,
  probeAddress,
} from './job-network.js';
import { startNamespacedJob } from './job-runtime.js';
import { confirmStart } from './job-start.js';
import { blankRecord, toJobInfo, type JobRecord, type JobStore } from './job-store.js';
import type { Supervisor } from './supervisor.js';

/** What starting a job uses of the agent. */
export interface RunHost {
  readonly config: Pick<AgentConfig, 'hostId' | 'jobBridge' | 'cgroupParent'>;
  readonly log: Logger;
  readonly store: JobStore;
  readonly supervisor: Pick<Supervisor, 'watch' | 'recordExit'>;
  /** Publish a job's state as an event. */
  event(r: JobRecord): void;
  /** The cluster's named jobs (for the job's /etc/hosts). */
  namedJobs(): readonly NameEntry[];
}

/**
 * Run `req` as job `id` (the caller holds its lock). It answers once the command's exec
 * succeeded; anything that fails on the way leaves the job `exited` with the reason, and no cgroup.
 */
export async function runJob(
  host: RunHost,
  id: string,
  req: AgentRequest<'run'>,
): Promise<JobInfo> {
  const { config, store } = host;
  if (await exists(store, id)) {
    throw new DroverError(ErrorCode.AlreadyExists, `job ${id} already exists`, {
      details: { jobId: id },
    });
  }
  const cwd = req.cwd ?? '/';
  await assertDirectory(cwd);
  const network = jobNetworkFor(req.network);
  const address = addressOf(network);
  if (address) {
    // Refused before anything exists: no bridge here, or the address answers on the segment.
    checkJobBridge(config.hostId, config.jobBridge);
    await probeAddress(config.hostId, config.jobBridge, address.address);
  }
  const jobDir = await store.createJobDir(id);
  const env = { ...(req.env ?? {}), DROVER_JOB_ID: id, DROVER_JOB_DIR: jobDir };
  const cg = await JobCgroup.create({
    jobId: id,
    parent: config.cgroupParent,
    stateDir: jobDir,
    logger: host.log,
    ...(req.memoryLimitBytes !== undefined ? { memoryLimitBytes: req.memoryLimitBytes } : {}),
  });
  const record: JobRecord = {
    ...blankRecord(id, config.hostId, jobDir),
    name: req.name ?? id,
    kind: JobKind.namespaced,
    state: JobState.starting,
    command: [...req.command],
    cwd,
    env,
    hostname: req.hostname ?? id.slice(0, 63),
    memoryLimitBytes: req.memoryLimitBytes ?? null,
    network,
    checkpointOptions: req.checkpointOptions ?? {},
    until: req.until ?? 'main',
    mainPidfile: req.mainPidfile ?? null,
    tty: req.tty === true,
  };
  await store.save(record);
  try {
    const hostsFile = address
      ? await createHostsFile(record, address.address, host.namedJobs())
      : null;
    const started = await startNamespacedJob({
      command: req.command,
      env,
      cwd,
      hostname: record.hostname!,
      jobDir,
      cgroupProcsFiles: cg.paths.all.map((p) => join(p, 'cgroup.procs')),
      wrapper: { until: record.until, mainPidfile: record.mainPidfile, tty: record.tty },
      ...(address && hostsFile
        ? {
            attachNetwork: (initPid: number) => attachJob(id, initPid, address, config.jobBridge),
            hostsFile,
          }
        : {}),
    });
    started.launcher.unref();
    // `run` answers once the command's exec succeeded; a failed exec is a failed run.
    const failed = await confirmStart(store, id, started);
    if (failed) {
      record.exitCode = failed.exitCode;
      throw new DroverError(ErrorCode.StartFailed, `${req.command[0]}: ${failed.reason}`, {
        details: { jobId: id, exitCode: failed.exitCode, command: req.command.slice(0, 8) },
      });
    }
    record.rootPid = started.rootPid;
    record.rootStartTicks = started.rootStartTicks;
    record.mainPid = started.mainPid;
    record.mainPidInside = started.mainPidInside;
    record.mainStartTicks = started.mainStartTicks;
    record.state = JobState.running;
    await store.save(record);
    // Already over: record it now. (We hold the job's lock: the root's exit would wait for it.)
    if (started.rootPid === null)
      await host.supervisor.recordExit(id, {
        pid: -1,
        exitCode: null,
        signal: null,
        coreDumped: false,
      });
    else host.supervisor.watch(record);
  } catch (err) {
    const first = toDroverError(err);
    record.state = JobState.exited;
    record.note = first.message;
    host.event(record);
    record.exitedAt = new Date().toISOString();
    await store.save(record);
    await cg.destroy({ force: true }).catch((e: unknown) => first.suppress(e));
    throw first;
  }
  host.event(record);
  return toJobInfo(await store.load(id));
}

async function exists(store: JobStore, id: string): Promise<boolean> {
  return store.load(id).then(
    () => true,
    () => false,
  );
}

async function assertDirectory(path: string): Promise<void> {
  try {
    if ((await stat(path)).isDirectory()) return;
  } catch {
    // fall through
  }
  throw new DroverError(ErrorCode.InvalidArgument, `working directory ${path} does not exist`, {
    details: { cwd: path },
  });
}
