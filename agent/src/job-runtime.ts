/**
 * Starting a job as a migratable unit: its own PID, UTS, IPC and mount namespaces (and network
 * namespace, for a job with its own address), its own devpts, its cgroups, tini as its PID 1,
 * stdio on files in its directory, and the wrapper of `job-init.ts` around its command.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Writable } from 'node:stream';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import { childrenOf, exeOf, JOB_NAMESPACE_FLAGS, startTicks } from '@drover/native';
import { ENV_NAME_PATTERN } from '@drover/protocol';
import {
  describeInitExit,
  INIT_SCRIPT,
  TTY_RELAY,
  WRAPPER,
  wrapperArgs,
  type WrapperSpec,
} from './job-init.js';
import { mainByInsidePid, readMainPidFile } from './job-main.js';
import { JobFiles } from './job-store.js';

/** What a new job needs. */
export interface StartSpec {
  command: readonly string[];
  env: Readonly<Record<string, string>>;
  cwd: string;
  hostname: string;
  jobDir: string;
  /** `cgroup.procs` files the job's init joins before anything else runs. */
  cgroupProcsFiles: readonly string[];
  /**
   * A job with its own network namespace: called with the namespace init's host PID before the
   * command runs (the init waits on a gate), to give the namespace its interface.
   */
  attachNetwork?: (initPid: number) => Promise<void>;
  /** A file bound over /etc/hosts inside the job's mount namespace (its own names). */
  hostsFile?: string;
  /** Its lifetime, pidfile and terminal. */
  wrapper: WrapperSpec;
}

/** A started job's processes. */
export interface StartedJob {
  /** The `unshare` process (the agent's child; it waits for the namespace init). */
  launcher: ChildProcess;
  /** Host PID of tini, the PID namespace's init: what CRIU dumps (null: it already exited). */
  rootPid: number | null;
  rootStartTicks: number | null;
  /** Host PID of the command, its PID inside the namespace and start time (null: it already exited). */
  mainPid: number | null;
  mainPidInside: number | null;
  mainStartTicks: number | null;
}

const START_TIMEOUT_MS = 10_000;

/** Start a namespaced job; resolves once tini runs and the command is started. */
export async function startNamespacedJob(spec: StartSpec): Promise<StartedJob> {
  const jobEnv = Object.entries(spec.env).filter(
    // DROVER_* names are the agent's (it sets DROVER_JOB_ID and DROVER_JOB_DIR, the directory
    // that travels with the job): a job's own values are dropped.
    ([k]) => !k.startsWith('DROVER_') || k === 'DROVER_JOB_ID' || k === 'DROVER_JOB_DIR',
  );
  for (const [k] of jobEnv) {
    if (!ENV_NAME_PATTERN.test(k))
      throw new DroverError(ErrorCode.InvalidArgument, `invalid environment variable name ${k}`, {
        details: { name: k.slice(0, 256) },
      });
  }
  const env: Record<string, string> = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    ...Object.fromEntries(jobEnv.map(([k, v]) => [`DROVER_JOB_ENV_${k}`, v])),
    DROVER_JOB_ENV_NAMES: jobEnv.map(([k]) => k).join(' '),
    DROVER_JOB_DIR: spec.jobDir,
    DROVER_INIT_CGROUPS: spec.cgroupProcsFiles.join(' '),
    DROVER_INIT_HOSTNAME: spec.hostname,
    DROVER_INIT_CWD: spec.cwd,
    DROVER_WRAPPER: WRAPPER,
    ...(spec.wrapper.tty ? { DROVER_TTY_RELAY: TTY_RELAY } : {}),
    ...(spec.attachNetwork ? { DROVER_INIT_GATE: '1' } : {}),
    ...(spec.hostsFile ? { DROVER_INIT_HOSTS: spec.hostsFile } : {}),
  };
  const launcher = spawn(
    'unshare',
    [
      ...JOB_NAMESPACE_FLAGS,
      ...(spec.attachNetwork ? ['--net'] : []),
      '--',
      '/bin/sh',
      '-c',
      INIT_SCRIPT,
      'drover-init',
      ...wrapperArgs(spec.wrapper, spec.command),
    ],
    // A session of its own: the job never gets signals meant for the agent's terminal.
    {
      env,
      stdio: spec.attachNetwork ? ['ignore', 'ignore', 'ignore', 'pipe'] : 'ignore',
      detached: true,
    },
  );
  const launcherExit = new Promise<number | null>((resolve) =>
    launcher.once('exit', (c) => resolve(c)),
  );
  launcher.once('error', () => undefined);
  const deadline = Date.now() + START_TIMEOUT_MS;
  if (spec.attachNetwork) await openGate(launcher, spec.attachNetwork, deadline);
  let rootPid: number | null = null;
  for (;;) {
    const pid = launcher.pid;
    if (pid !== undefined) {
      const kid = childrenOf(pid)[0];
      if (kid !== undefined && exeOf(kid)?.endsWith('/tini')) {
        rootPid = kid;
        break;
      }
    }
    if (launcher.exitCode !== null || launcher.signalCode !== null || Date.now() > deadline) {
      const code = await Promise.race([launcherExit, sleep(100).then(() => null)]);
      // A command that finished before we looked: it ran, and its wrapper wrote the status.
      if (existsSync(join(spec.jobDir, JobFiles.exitStatus))) {
        return {
          launcher,
          rootPid: null,
          rootStartTicks: null,
          mainPid: null,
          mainPidInside: null,
          mainStartTicks: null,
        };
      }
      const why = describeInitExit(code, spec.cwd, join(spec.jobDir, JobFiles.stderr));
      throw new DroverError(ErrorCode.FailedPrecondition, `cannot start job: ${why}`, {
        details: { exitCode: code, command: spec.command },
      });
    }
    await sleep(5);
  }
  const rootStartTicks = startTicks(rootPid);
  // The command names itself in main-pid before it execs (job-init.ts). Wait briefly for it.
  let main = mainByInsidePid(rootPid, null);
  for (let i = 0; i < 400 && main.mainPid === null; i++) {
    const inside = await readMainPidFile(spec.jobDir);
    if (inside !== undefined && inside !== null) main = mainByInsidePid(rootPid, inside);
    if (main.mainPid !== null || inside === null || exeOf(rootPid) === null) break;
    await sleep(5);
  }
  return { launcher, rootPid, rootStartTicks, ...main };
}

/**
 * The network gate: wait for the namespace init (the launcher's child), let `attach` give its
 * namespace an interface, then let the init go on. On failure the half-made job is killed.
 */
async function openGate(
  launcher: ChildProcess,
  attach: (initPid: number) => Promise<void>,
  deadline: number,
): Promise<void> {
  const gate = launcher.stdio[3] as Writable | null;
  gate?.on('error', () => undefined); // an init that died closes its end
  let initPid: number | undefined;
  while (initPid === undefined) {
    if (launcher.pid !== undefined) initPid = childrenOf(launcher.pid)[0];
    if (initPid !== undefined) break;
    if (launcher.exitCode !== null || launcher.signalCode !== null || Date.now() > deadline) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        'cannot start job: its namespaces were not made',
        {
          details: { exitCode: launcher.exitCode },
        },
      );
    }
    await sleep(5);
  }
  try {
    await attach(initPid);
  } catch (err) {
    try {
      process.kill(initPid, 'SIGKILL'); // PID 1 of the job's namespace: the namespace goes with it
    } catch {
      // already gone
    }
    gate?.destroy();
    throw err;
  }
  await new Promise<void>((resolve) => {
    if (!gate) return resolve();
    gate.end('go\n', () => resolve());
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
