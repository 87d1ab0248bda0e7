/** Finding what a testbed run left on the machine, and sweeping the leftovers of crashed runs. */
import { existsSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  DEFAULT_BASE_DIR,
  isRunId,
  liveRuns,
  readOwner,
  releaseSubnet,
  runIdOf,
  sameProcess,
  subnetsOf,
  TESTBED_PREFIX,
} from './names.js';
import {
  allPids,
  cmdline,
  environ,
  exeName,
  isAlive,
  killChecked,
  nsInode,
  run,
  sleep,
  startTime,
} from './proc.js';

/** One resource of a run still present on the machine. */
export interface Leftover {
  kind: 'netns' | 'interface' | 'mount' | 'cgroup' | 'process' | 'file';
  name: string;
  detail?: string;
}

const NETNS_DIR = '/run/netns';
const CGROUP_ROOT = '/sys/fs/cgroup';

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Inodes of the named network namespaces whose name contains `needle`. */
function netnsInodes(needle: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const n of list(NETNS_DIR)) {
    if (!n.includes(needle)) continue;
    try {
      out.set(String(statSync(join(NETNS_DIR, n)).ino), n);
    } catch {
      // deleted meanwhile
    }
  }
  return out;
}

/**
 * Cgroup directories (any hierarchy, depth ≤ 5) whose name contains `needle`, and everything
 * below them (agents in the testbed put job cgroups under `<runId>-<host>/`), deepest first.
 */
function cgroupsMatching(needle: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, depth: number, inside: boolean): void => {
    if (depth > 6) return;
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue; // symlinked hierarchies (cpu -> cpu,cpuacct) are walked once
      const p = join(dir, e.name);
      const match = inside || e.name.includes(needle);
      walk(p, depth + 1, match);
      if (match) out.push(p);
    }
  };
  walk(CGROUP_ROOT, 0, false);
  return out;
}

/** Remove every cgroup of `runId` (deepest first); ones still populated stay and are leaks. */
export function removeCgroups(runId: string): void {
  for (const cg of cgroupsMatching(runId)) {
    try {
      rmdirSync(cg);
    } catch {
      // still populated, or not ours to remove: reported by leaks()
    }
  }
}

/**
 * Live (non-zombie) processes, other than this one, that belong to `runId`: they name it on their
 * command line, carry its environment marker, or sit in one of its network namespaces. With
 * `marked`, only the last two: what the run started itself (a command line can merely mention
 * a run, e.g. `tail -f` of one of its logs).
 */
function processesOf(runId: string, marked = false): Map<number, string> {
  const inodes = netnsInodes(runId);
  const out = new Map<number, string>();
  for (const pid of allPids()) {
    if (pid === process.pid || !isAlive(pid)) continue;
    const argv = cmdline(pid).join(' ');
    const why = environ(pid).includes(`DROVER_TESTBED_RUN=${runId}`)
      ? 'environ'
      : inodes.has(nsInode(pid, 'net') ?? '')
        ? 'netns'
        : !marked && argv.includes(runId)
          ? 'cmdline'
          : undefined;
    if (why !== undefined) out.set(pid, `${exeName(pid) ?? '?'} (${why}): ${argv.slice(0, 200)}`);
  }
  return out;
}

/**
 * Everything of run `runId` still on the machine: named netns, interfaces, mounts, cgroups,
 * processes (by cmdline, testbed environment marker or network namespace), its run directory
 * and subnet reservation. Zombies count as gone.
 */
export function leaks(runId: string, baseDir: string = DEFAULT_BASE_DIR): Leftover[] {
  const out: Leftover[] = [];
  for (const n of list(NETNS_DIR)) if (n.includes(runId)) out.push({ kind: 'netns', name: n });
  for (const n of list('/sys/class/net'))
    if (n.includes(runId)) out.push({ kind: 'interface', name: n });
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (line.includes(runId))
      out.push({ kind: 'mount', name: line.split(' ')[4] ?? line, detail: line });
  }
  for (const p of cgroupsMatching(runId)) out.push({ kind: 'cgroup', name: p });
  for (const [pid, detail] of processesOf(runId))
    out.push({ kind: 'process', name: String(pid), detail });
  if (existsSync(join(baseDir, runId))) out.push({ kind: 'file', name: join(baseDir, runId) });
  for (const x of subnetsOf(baseDir, runId))
    out.push({ kind: 'file', name: join(baseDir, 'subnets', String(x)) });
  return out;
}

/** Throw, listing them, if anything of run `runId` is still present. */
export function assertNoLeftovers(runId: string, baseDir: string = DEFAULT_BASE_DIR): void {
  const found = leaks(runId, baseDir);
  if (found.length > 0) {
    const lines = found.map((l) => `  ${l.kind} ${l.name}${l.detail ? ` — ${l.detail}` : ''}`);
    throw new Error(
      `testbed run ${runId} left ${found.length} resource(s) behind:\n${lines.join('\n')}`,
    );
  }
}

/** What {@link sweepLeftovers} did. */
export interface SweepReport {
  /** Dead runs that were swept. */
  swept: string[];
  /** Runs left alone because their owner process is alive (or they are still being created). */
  skipped: string[];
  /** PIDs that were sent SIGKILL. */
  killed: number[];
  /** Whatever of the swept runs could not be removed. */
  remaining: Leftover[];
}

/** Processes a sweep may kill by name: their death takes every other process of a host with it. */
const KILLABLE = ['tini', 'nats-server', 'sshd'] as const;

/** Run ids with a run directory or a subnet reservation under `baseDir`. */
function runsIn(baseDir: string): Set<string> {
  const ids = new Set<string>();
  for (const n of list(baseDir)) if (isRunId(n)) ids.add(n);
  for (const x of list(join(baseDir, 'subnets'))) {
    try {
      const id = runIdOf(readFileSync(join(baseDir, 'subnets', x, 'run'), 'utf8'));
      if (id !== undefined) ids.add(id);
    } catch {
      // empty reservation
    }
  }
  return ids;
}

/** Every run id that has some trace on the machine. */
function tracedRuns(baseDir: string): Set<string> {
  const ids = runsIn(baseDir);
  const add = (s: string | undefined): void => {
    if (s !== undefined) ids.add(s);
  };
  for (const n of list(NETNS_DIR)) add(runIdOf(n));
  for (const n of list('/sys/class/net')) add(runIdOf(n));
  for (const pid of allPids()) {
    const argv = cmdline(pid).join(' ');
    if (argv.includes(TESTBED_PREFIX)) add(runIdOf(argv));
  }
  for (const p of cgroupsMatching(TESTBED_PREFIX)) add(runIdOf(p));
  return ids;
}

/**
 * Whether a run must be left alone: live in this process, alive elsewhere (its owner or, once
 * detached, one of its keepers), being created, or held under another base directory.
 */
function isLiveRun(baseDir: string, runId: string): boolean {
  if (liveRuns.has(runId)) return true;
  const runDir = join(baseDir, runId);
  const rec = readOwner(runDir);
  if (rec !== undefined) {
    return (rec.pid !== process.pid && sameProcess(rec)) || (rec.keepers ?? []).some(sameProcess);
  }
  try {
    // A run dir without an owner record is younger than a few ms unless its creator died.
    return Date.now() - statSync(runDir).mtimeMs < 10_000;
  } catch {
    // No run dir here: the run may belong to another base directory (a local cluster under
    // `drover up --dir`), whose owner record this sweep cannot read. Alive processes say so.
    return processesOf(runId, true).size > 0;
  }
}

/**
 * Remove everything of run `runId` now, whether its owner lives or not: SIGKILL its processes
 * (identity checked: tini, nats-server or sshd naming the run or in its network namespace, and
 * any process carrying the run's environment marker or in its network namespaces, such as a
 * controller it started; PID and start time read just before the signal), then its
 * links, namespaces, cgroups, run directory and subnet reservation. Used on dead runs by
 * {@link sweepLeftovers} and on a detached run by its owner (`drover down`). Returns the PIDs
 * killed and what could not be removed.
 */
export async function removeRun(
  runId: string,
  opts: { baseDir?: string } = {},
): Promise<{ killed: number[]; remaining: Leftover[] }> {
  const baseDir = opts.baseDir ?? DEFAULT_BASE_DIR;
  const inodes = netnsInodes(runId);
  const killed: number[] = [];
  const kill = (pid: number, exe: string): void => {
    const st = startTime(pid);
    if (killChecked(pid, 'SIGKILL', { exe: [exe], ...(st === undefined ? {} : { startTime: st }) }))
      killed.push(pid);
  };
  const killAll = (): void => {
    for (const pid of allPids()) {
      const exe = exeName(pid);
      if (exe === undefined || !(KILLABLE as readonly string[]).includes(exe)) continue;
      if (cmdline(pid).join(' ').includes(runId) || inodes.has(nsInode(pid, 'net') ?? '')) {
        kill(pid, exe);
      }
    }
    for (const pid of processesOf(runId, true).keys()) {
      const exe = exeName(pid);
      if (exe !== undefined) kill(pid, exe);
    }
  };
  // Two rounds: a process forked while the first round ran is caught by the second.
  for (let round = 0; round < 2; round++) {
    killAll();
    for (let i = 0; i < 300 && (killed.some(isAlive) || processesOf(runId, true).size > 0); i++)
      await sleep(10);
  }
  const links = list('/sys/class/net').filter((n) => runIdOf(n) === runId);
  // Veths before the bridge they are enslaved to.
  const isBridge = (n: string): number => Number(n.endsWith('-br') || n.endsWith('-jb'));
  for (const n of links.sort((a, b) => isBridge(a) - isBridge(b))) {
    await run(['ip', 'link', 'del', n]);
  }
  for (const n of list(NETNS_DIR).filter((x) => runIdOf(x) === runId))
    await run(['ip', 'netns', 'del', n]);
  removeCgroups(runId);
  rmSync(join(baseDir, runId), { recursive: true, force: true });
  for (const x of subnetsOf(baseDir, runId)) releaseSubnet(baseDir, runId, x);
  return { killed, remaining: leaks(runId, baseDir) };
}

/**
 * Remove the leftovers of crashed earlier runs: only resources named with the testbed prefix,
 * only runs whose owner process (and, for a detached run, every keeper) is dead, and only
 * processes whose identity is checked (see {@link removeRun}). Everything else is never touched.
 * `onlyBaseDir` limits the sweep to runs with a directory or subnet reservation under `baseDir`.
 */
export async function sweepLeftovers(
  opts: { baseDir?: string; onlyBaseDir?: boolean } = {},
): Promise<SweepReport> {
  const baseDir = opts.baseDir ?? DEFAULT_BASE_DIR;
  const report: SweepReport = { swept: [], skipped: [], killed: [], remaining: [] };
  const runs = opts.onlyBaseDir === true ? runsIn(baseDir) : tracedRuns(baseDir);
  for (const runId of runs) {
    if (isLiveRun(baseDir, runId)) {
      report.skipped.push(runId);
      continue;
    }
    report.swept.push(runId);
    const r = await removeRun(runId, { baseDir });
    report.killed.push(...r.killed);
    report.remaining.push(...r.remaining);
  }
  return report;
}

/**
 * Wait (≤ `timeoutMs`) for a torn-down run to leave nothing behind; returns what remains. Waiting
 * covers processes that are still exiting (a killed host's last processes, nsenter parents).
 */
export async function settleLeftovers(
  runId: string,
  timeoutMs = 3000,
  baseDir?: string,
): Promise<Leftover[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = leaks(runId, baseDir);
    if (found.length === 0 || Date.now() > deadline) return found;
    await sleep(50);
  }
}
