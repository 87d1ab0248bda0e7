/**
 * A job's main process — what `signal` and `stop` reach and `jobs` shows — tracked by identity,
 * never by its place in the tree: the job's wrapper names it in `main-pid` (its PID inside the
 * job, which CRIU keeps), and on this host it is known by host PID and start time. After a
 * restore, a reattach or a pidfile hand-over the host PID is found again from the inside PID.
 */
import { join } from 'node:path';
import { childrenOf, isSameLiveProcess, procEntry, processTree, startTicks } from '@drover/native';
import { JobKind } from '@drover/protocol';
import { readNoFollow } from './job-dir-fs.js';
import { WRAPPER_NAME } from './job-init.js';
import { JobFiles, type JobRecord } from './job-store.js';

/** The main-process fields of a job record. */
export interface MainProcess {
  mainPid: number | null;
  mainPidInside: number | null;
  mainStartTicks: number | null;
}

const NONE: MainProcess = { mainPid: null, mainPidInside: null, mainStartTicks: null };

/**
 * What the job's `main-pid` says: a PID inside the job, null when the main process is gone
 * (the wrapper empties it), undefined when there is no file (jobs started before it existed,
 * or a command that has not named itself yet). The file is the job's to write, so anything it
 * says is only ever looked up among the job's own processes, and never names its init.
 */
export async function readMainPidFile(jobDir: string): Promise<number | null | undefined> {
  let text: string;
  try {
    text = (await readNoFollow(join(jobDir, JobFiles.mainPid), { maxBytes: 32 })).data.toString();
  } catch {
    return undefined;
  }
  const n = Number(text.trim());
  return text.trim() !== '' && Number.isInteger(n) && n > 1 ? n : null;
}

/** The host PID of the live (non-zombie) process of the job whose PID inside it is `inside`. */
export function hostPidOf(rootPid: number, inside: number): number | null {
  const p = processTree(rootPid).find((e) => e.nspid.at(-1) === inside && e.state !== 'Z');
  return p?.pid ?? null;
}

/** The main process `inside` of the job rooted at `rootPid`, as this host knows it. */
export function mainByInsidePid(rootPid: number, inside: number | null): MainProcess {
  if (inside === null) return NONE;
  const pid = hostPidOf(rootPid, inside);
  if (pid === null) return NONE;
  return { mainPid: pid, mainPidInside: inside, mainStartTicks: startTicks(pid) };
}

/**
 * The job's main process now. The record's PID stands while it is the same live process and
 * `main-pid` still names it; otherwise it is looked up again by the inside PID the file names
 * (a restore gave it another host PID, or a pidfile handed the role to a daemon). Jobs without
 * the file (started before it existed) fall back to the tree position they were started with.
 */
export async function resolveMain(r: JobRecord): Promise<MainProcess> {
  if (r.kind !== JobKind.namespaced) {
    return {
      mainPid: r.mainPid,
      mainPidInside: r.mainPidInside,
      mainStartTicks: r.mainStartTicks ?? null,
    };
  }
  if (r.rootPid === null || !isSameLiveProcess(r.rootPid, r.rootStartTicks)) return NONE;
  const inside = await readMainPidFile(r.jobDir);
  if (inside === undefined) return legacyMain(r.rootPid);
  if (
    inside !== null &&
    inside === r.mainPidInside &&
    r.mainPid !== null &&
    isSameLiveProcess(r.mainPid, r.mainStartTicks ?? null)
  ) {
    return { mainPid: r.mainPid, mainPidInside: inside, mainStartTicks: r.mainStartTicks ?? null };
  }
  return mainByInsidePid(r.rootPid, inside);
}

/** Refresh the record's main process; true if it changed (the caller saves the record). */
export async function refreshMain(r: JobRecord): Promise<boolean> {
  const m = await resolveMain(r);
  const changed =
    m.mainPid !== r.mainPid ||
    m.mainPidInside !== r.mainPidInside ||
    m.mainStartTicks !== (r.mainStartTicks ?? null);
  Object.assign(r, m);
  return changed;
}

/** tini → wrapper → command: how jobs started before `main-pid` existed were found. */
function legacyMain(rootPid: number): MainProcess {
  const wrapper = childrenOf(rootPid)[0];
  const cmd = wrapper === undefined ? undefined : childrenOf(wrapper)[0];
  if (cmd === undefined) return NONE;
  return {
    mainPid: cmd,
    mainPidInside: procEntry(cmd)?.nspid.at(-1) ?? null,
    mainStartTicks: startTicks(cmd),
  };
}

/**
 * Whom a signal for the job reaches (call `refreshMain` first): its main process; once that is
 * gone (a job that lives on `--until all`), every process of the job but its init and the
 * wrapper with its helpers (`sleep`, `mv`): the wrapper must live to record how the job ended.
 */
export function signalTargets(r: JobRecord): number[] {
  if (r.mainPid !== null) return [r.mainPid];
  if (r.rootPid === null) return [];
  const tree = processTree(r.rootPid);
  // sh -c WRAPPER drover-job ...: argv[3] is the wrapper's $0.
  const wrapper = tree.find(
    (p) => p.ppid === r.rootPid && p.cmdline[1] === '-c' && p.cmdline[3] === WRAPPER_NAME,
  );
  const own = new Set(wrapper ? processTree(wrapper.pid).map((p) => p.pid) : []);
  return tree
    .filter((p) => p.pid !== r.rootPid && p.state !== 'Z' && !own.has(p.pid))
    .map((p) => p.pid);
}
