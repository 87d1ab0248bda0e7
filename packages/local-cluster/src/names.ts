/** Names of everything a testbed run creates, its subnet reservation and its owner record. */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { isSameLiveProcess } from '@drover/native';
import { arr, int, obj, opt, parseJsonAs, str, type Schema } from '@drover/protocol';
import { startTime } from './proc.js';

/** Every testbed resource name starts with this; a run's names start with its run id. */
export const TESTBED_PREFIX = 'drtb';

/** Where run directories (state, logs, owner record) live by default. */
export const DEFAULT_BASE_DIR = '/tmp/drover-testbed';

/** A run id: the prefix and 6 hex digits (10 chars, so `<runId>-h99` fits IFNAMSIZ = 15). */
export function newRunId(): string {
  return `${TESTBED_PREFIX}${randomBytes(3).toString('hex')}`;
}

/** True when `s` is a run id, e.g. a directory name under the base dir. */
export function isRunId(s: string): boolean {
  return new RegExp(`^${TESTBED_PREFIX}[0-9a-f]{6}$`).test(s);
}

/** The run id embedded in a resource name (`drtb1a2b3c-h1` → `drtb1a2b3c`), if any. */
export function runIdOf(name: string): string | undefined {
  return new RegExp(`(${TESTBED_PREFIX}[0-9a-f]{6})`).exec(name)?.[1];
}

/** Resource names of one run. Interface names stay ≤ 15 chars (IFNAMSIZ). */
export const names = {
  bridge: (runId: string) => `${runId}-br`,
  hostVeth: (runId: string, i: number) => `${runId}-h${i}`,
  /** The job network's segment: one bridge all hosts' job bridges hang off (the shared L2). */
  jobSegment: (runId: string) => `${runId}-jb`,
  /** Root-side end of host i's uplink into the job segment. */
  jobUplink: (runId: string, i: number) => `${runId}-j${i}`,
  netns: (runId: string, i: number) => `${runId}-h${i}`,
  /** Last argument of each host's keep-alive shell: marks tini's cmdline with the run. */
  marker: (runId: string, i: number) => `${runId}-h${i}`,
  /** The host's own cgroup in every hierarchy (its cgroup namespace root). */
  cgroup: (runId: string, host: string) => `${runId}-${host}`,
} as const;

/** Run ids of testbeds of this process not yet torn down: a sweep never touches these. */
export const liveRuns = new Set<string>();

/** A process named by PID and start time (clock ticks since boot): one process across PID reuse. */
export interface ProcessIdentity {
  pid: number;
  startTime: number;
}

/** Who owns a run: written before any resource exists, so a sweep can tell live runs from dead. */
export interface OwnerRecord {
  runId: string;
  pid: number;
  startTime: number;
  subnet: number;
  createdAt: string;
  /**
   * Set when the run was detached from its creator (`drover up` exits, the cluster stays): the
   * run lives while any of these processes does (the hosts' inits, NATS, the controller).
   */
  keepers?: ProcessIdentity[];
}

/** Write the owner record of a run held by this process (and, once detached, its keepers). */
export function writeOwner(
  runDir: string,
  runId: string,
  subnet: number,
  keepers?: readonly ProcessIdentity[],
): void {
  const rec: OwnerRecord = {
    runId,
    pid: process.pid,
    startTime: startTime(process.pid) ?? 0,
    subnet,
    createdAt: readOwner(runDir)?.createdAt ?? new Date().toISOString(),
    ...(keepers === undefined ? {} : { keepers: [...keepers] }),
  };
  // Written whole and renamed: a sweep in another process never reads half a record.
  const tmp = join(runDir, `owner.json.${process.pid}`);
  writeFileSync(tmp, JSON.stringify(rec) + '\n');
  renameSync(tmp, join(runDir, 'owner.json'));
}

/** An owner record as `owner.json` holds it (checked when read: it may be from another version). */
const OwnerRecordFile: Schema<OwnerRecord> = obj({
  runId: str({ min: 1 }),
  pid: int(),
  startTime: int(),
  subnet: int(),
  createdAt: str(),
  keepers: opt(arr(obj({ pid: int(), startTime: int() }), { max: 4096 })),
});

/** Read a run's owner record, or undefined if missing, unreadable or not an owner record. */
export function readOwner(runDir: string): OwnerRecord | undefined {
  try {
    const text = readFileSync(join(runDir, 'owner.json'), 'utf8');
    return parseJsonAs(OwnerRecordFile, text, `owner record of ${runDir}`);
  } catch {
    return undefined;
  }
}

/** True when `p` still exists and is the same process (same PID and start time), not a zombie. */
export function sameProcess(p: ProcessIdentity): boolean {
  return isSameLiveProcess(p.pid, p.startTime);
}

/** True when the process that created the run, or one of a detached run's keepers, still exists. */
export function ownerAlive(rec: OwnerRecord | undefined): boolean {
  return rec !== undefined && (sameProcess(rec) || (rec.keepers ?? []).some(sameProcess));
}

/** The subnet third octet's directory of reservations (`<base>/subnets/<X>` holds a run id). */
const subnetDir = (baseDir: string): string => join(baseDir, 'subnets');

/**
 * Reserve a free 10.77.X.0/24 for `runId`. A subnet is free when no local interface has an
 * address in it and no other run holds its reservation; the reservation is an atomic mkdir, so
 * two testbeds created at the same moment (in two processes) never pick the same X.
 */
export function reserveSubnet(baseDir: string, runId: string): number {
  const dir = subnetDir(baseDir);
  mkdirSync(dir, { recursive: true });
  const used = new Set<number>();
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) {
      // The job network of a run is 10.78.X.0/24: either octet in use takes X out.
      const m = /^10\.7[78]\.(\d+)\./.exec(a.address);
      if (m?.[1] !== undefined) used.add(Number(m[1]));
    }
  }
  const start = 1 + (parseInt(runId.slice(-4), 16) % 250);
  for (let k = 0; k < 250; k++) {
    const x = 1 + ((start - 1 + k) % 250);
    if (used.has(x)) continue;
    try {
      mkdirSync(join(dir, String(x)));
    } catch {
      continue; // held by another run (live, or dead and awaiting a sweep)
    }
    writeFileSync(join(dir, String(x), 'run'), runId);
    return x;
  }
  throw new Error('no free 10.77.X.0/24 subnet for a testbed');
}

/** Release a subnet reservation, only if `runId` holds it. */
export function releaseSubnet(baseDir: string, runId: string, x: number): void {
  const d = join(subnetDir(baseDir), String(x));
  try {
    if (readFileSync(join(d, 'run'), 'utf8').trim() !== runId) return;
  } catch {
    // no run file: a reservation interrupted between mkdir and write; ours by construction
  }
  rmSync(d, { recursive: true, force: true });
}

/** Subnet reservations held by `runId` (normally one). */
export function subnetsOf(baseDir: string, runId: string): number[] {
  const out: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync(subnetDir(baseDir));
  } catch {
    return out;
  }
  for (const e of entries) {
    try {
      if (readFileSync(join(subnetDir(baseDir), e, 'run'), 'utf8').trim() === runId)
        out.push(Number(e));
    } catch {
      // unreadable reservation: not provably ours
    }
  }
  return out;
}
