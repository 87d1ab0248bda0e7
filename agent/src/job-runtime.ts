/**
 * Starting a job as a migratable unit: its own PID, UTS, IPC and mount namespaces (and network
 * namespace, for a job with its own address), its cgroups, tini as its PID 1, stdio on files in
 * its directory, and a wrapper that records its exit status.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Writable } from 'node:stream';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import { childrenOf, exeOf, procEntry, startTicks } from '@drover/native';
import { ENV_NAME_PATTERN } from '@drover/protocol';
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
}

/** A started job's processes. */
export interface StartedJob {
  /** The `unshare` process (the agent's child; it waits for the namespace init). */
  launcher: ChildProcess;
  /** Host PID of tini, the PID namespace's init: what CRIU dumps (null: it already exited). */
  rootPid: number | null;
  rootStartTicks: number | null;
  /** Host PID of the command and its PID inside the namespace (null if it already exited). */
  mainPid: number | null;
  mainPidInside: number | null;
}

// Runs as PID 1 of the new namespaces before becoming tini. Why each step:
// - cgroups first, so every process of the job is in them from its first instruction;
// - nsfs mounts (other network namespaces' /run/netns/* entries copied from the host's mount
//   table) are unmounted: they pin foreign namespaces and break a restore once those are gone;
// - stdio is reopened inside the new mount namespace (fds opened outside point at host mounts,
//   which CRIU cannot resolve);
// - a job with its own network waits at a gate (fd 3, a pipe from the agent) until the agent has
//   given its namespace an interface, then closes the gate so nothing of the agent stays open;
// - its /etc/hosts is a file of its job directory (bound in its own mount namespace only);
// - tini runs the command under a shell that writes its exit status into the job directory, so
//   the status survives agent restarts and migrations (the shell is part of the dumped tree).
const INIT_SCRIPT = `
for f in $DROVER_INIT_CGROUPS; do echo 0 > "$f" || exit 121; done
hostname "$DROVER_INIT_HOSTNAME" || exit 122
awk '$3 == "nsfs" { print $2 }' /proc/self/mounts | xargs -r -n1 umount -l 2>/dev/null
if [ -n "$DROVER_INIT_GATE" ]; then read -r _ <&3 || exit 124; exec 3<&-; fi
if [ -n "$DROVER_INIT_HOSTS" ]; then mount --bind "$DROVER_INIT_HOSTS" /etc/hosts || exit 125; fi
exec </dev/null >>"$DROVER_JOB_DIR/${JobFiles.stdout}" 2>>"$DROVER_JOB_DIR/${JobFiles.stderr}"
cd "$DROVER_INIT_CWD" || exit 123
unset DROVER_INIT_CGROUPS DROVER_INIT_HOSTNAME DROVER_INIT_CWD DROVER_INIT_GATE DROVER_INIT_HOSTS
exec setsid tini -s -- /bin/sh -c "$DROVER_WRAPPER" drover-job "$@"
`;

// The job's own environment reaches only its command: the helpers before it (unshare, this
// shell, hostname, awk, umount, tini, the wrapper) run with the agent's fixed environment, so a
// job's LD_PRELOAD, PATH or BASH_ENV cannot run code in them (unshare runs outside the job's
// namespaces and cgroups). The variables travel as DROVER_JOB_ENV_<name> and are exported in the
// subshell that execs the command. Names are checked against ENV_NAME_PATTERN, so eval is safe.
const EXPORT_JOB_ENV = `for DROVER_N_ in $DROVER_JOB_ENV_NAMES; do eval "DROVER_V_=\\$DROVER_JOB_ENV_$DROVER_N_"; unset "DROVER_JOB_ENV_$DROVER_N_"; eval "export $DROVER_N_=\\"\\$DROVER_V_\\""; done; unset DROVER_N_ DROVER_V_ DROVER_JOB_ENV_NAMES DROVER_WRAPPER`;

const WRAPPER = `(${EXPORT_JOB_ENV}; exec "$@"); st=$?; printf '%s\\n' "$st" > "$DROVER_JOB_DIR/${JobFiles.exitStatus}.tmp" && mv -f "$DROVER_JOB_DIR/${JobFiles.exitStatus}.tmp" "$DROVER_JOB_DIR/${JobFiles.exitStatus}"; exit $st`;

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
    ...(spec.attachNetwork ? { DROVER_INIT_GATE: '1' } : {}),
    ...(spec.hostsFile ? { DROVER_INIT_HOSTS: spec.hostsFile } : {}),
  };
  const launcher = spawn(
    'unshare',
    [
      '--pid',
      '--fork',
      '--mount-proc',
      '--uts',
      '--ipc',
      ...(spec.attachNetwork ? ['--net'] : []),
      '--',
      '/bin/sh',
      '-c',
      INIT_SCRIPT,
      'drover-init',
      ...spec.command,
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
        };
      }
      throw new DroverError(ErrorCode.FailedPrecondition, describeStartFailure(code, spec), {
        details: { exitCode: code, command: spec.command },
      });
    }
    await sleep(5);
  }
  const rootStartTicks = startTicks(rootPid);
  // tini -> wrapper shell -> command. Wait briefly for the command to appear.
  let mainPid: number | null = null;
  for (let i = 0; i < 200 && mainPid === null; i++) {
    const wrapper = childrenOf(rootPid)[0];
    const cmd = wrapper === undefined ? undefined : childrenOf(wrapper)[0];
    if (cmd !== undefined) mainPid = cmd;
    else if (procEntry(rootPid) === null) break;
    else await sleep(5);
  }
  const inside = mainPid === null ? null : (procEntry(mainPid)?.nspid.at(-1) ?? null);
  return { launcher, rootPid, rootStartTicks, mainPid, mainPidInside: inside };
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

/** Find the main process of a restored or re-attached namespaced job (tini → wrapper → command). */
export function findMainProcess(rootPid: number): {
  mainPid: number | null;
  mainPidInside: number | null;
} {
  const wrapper = childrenOf(rootPid)[0];
  const cmd = wrapper === undefined ? undefined : childrenOf(wrapper)[0];
  if (cmd === undefined) return { mainPid: null, mainPidInside: null };
  return { mainPid: cmd, mainPidInside: procEntry(cmd)?.nspid.at(-1) ?? null };
}

function describeStartFailure(code: number | null, spec: StartSpec): string {
  const why =
    code === 121
      ? 'could not join the job cgroups'
      : code === 122
        ? 'could not set the hostname'
        : code === 123
          ? `working directory ${spec.cwd} does not exist`
          : code === 124
            ? 'its network was not set up'
            : code === 125
              ? 'could not bind its /etc/hosts'
              : code === null
                ? 'tini did not start in time (is tini installed? run deploy/setup-host.sh)'
                : `the launcher exited with ${code} (see ${join(spec.jobDir, JobFiles.stderr)})`;
  return `cannot start job: ${why}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
