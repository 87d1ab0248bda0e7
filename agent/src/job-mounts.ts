/**
 * Which mounts of a job's mount namespace are the host's, named as CRIU external mounts so that a
 * restore binds the *destination's* mounts at the same paths, never the source's directories.
 *
 * A job's mount namespace starts as a copy of its host's. Left to CRIU's auto-detection
 * (`mnt[]`), a bind mount is restored from the path its root had on the source — for a host whose
 * /srv is a bind of another directory, that is the source's directory, which on another machine
 * is another disk's path or nothing. So every mountpoint whose mounts are all copies of the
 * host's (same mountpoint, device and root) is dumped as `mnt[<mountpoint>]:<key>` and restored
 * as `mnt[<key>]:<mountpoint>`: the destination's own mount there. Mounts the job made itself
 * (its /proc, a tmpfs) are not the host's and stay with CRIU (`mnt[]` remains for them).
 */
import { readFile } from 'node:fs/promises';

/** One row of /proc/<pid>/mountinfo (the fields this module needs). */
export interface MountRow {
  mountId: number;
  /** `major:minor` of the file system. */
  dev: string;
  /** The mount's root inside its file system. */
  root: string;
  mountpoint: string;
  /** The file system's type (`tmpfs`, `ext4`, …) and its super block's options. */
  fstype: string;
  superOptions: string;
}

/** A mount the restore binds from the destination: `source` is a path there. */
export interface ExternalMount {
  key: string;
  mountpoint: string;
  /** Path on the restoring host to bind; the mountpoint itself unless the job's own file. */
  source: string;
}

/** Parse mountinfo text; rows with escaped characters (spaces, tabs) are left to CRIU. */
export function parseMountinfo(text: string): MountRow[] {
  const out: MountRow[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const [id, , dev, root, mountpoint] = f;
    if (!id || !dev || !root || !mountpoint) continue;
    if (root.includes('\\') || mountpoint.includes('\\')) continue;
    // After the optional fields, a '-', then the type, the source and the super options.
    const dash = f.indexOf('-', 6);
    out.push({
      mountId: Number(id),
      dev,
      root,
      mountpoint,
      fstype: dash > 0 ? (f[dash + 1] ?? '') : '',
      superOptions: dash > 0 ? (f[dash + 3] ?? '') : '',
    });
  }
  return out;
}

/**
 * The host's mounts as the job sees them: every mountpoint (but `/`, which the restore's
 * `--root /` takes) where each of the job's mounts is a copy of a host mount. Keys are `dm0`,
 * `dm1`, … in mountpoint order.
 */
export function hostMountsOf(job: readonly MountRow[], host: readonly MountRow[]): ExternalMount[] {
  const hostKeys = new Set(host.map((m) => `${m.mountpoint}\0${m.dev}\0${m.root}`));
  const byPoint = new Map<string, MountRow[]>();
  for (const m of job) byPoint.set(m.mountpoint, [...(byPoint.get(m.mountpoint) ?? []), m]);
  const points = [...byPoint]
    .filter(
      ([mp, rows]) =>
        mp !== '/' && rows.every((m) => hostKeys.has(`${m.mountpoint}\0${m.dev}\0${m.root}`)),
    )
    .map(([mp]) => mp)
    .sort();
  return points.map((mountpoint, i) => ({ key: `dm${i}`, mountpoint, source: mountpoint }));
}

/** The host's mounts of the job whose root process is `rootPid`, read from /proc. */
export async function readHostMounts(rootPid: number): Promise<ExternalMount[]> {
  const [job, host] = await Promise.all([
    readFile(`/proc/${rootPid}/mountinfo`, 'utf8'),
    readFile('/proc/self/mountinfo', 'utf8'),
  ]);
  return hostMountsOf(parseMountinfo(job), parseMountinfo(host));
}

/** Dump-side `--external` entries: each mountpoint named by its key. */
export function dumpMountExternals(mounts: readonly ExternalMount[]): string[] {
  return mounts.map((m) => `mnt[${m.mountpoint}]:${m.key}`);
}

/** Restore-side `--external` entries: each key bound from its source on this host. */
export function restoreMountExternals(mounts: readonly ExternalMount[]): string[] {
  return mounts.map((m) => `mnt[${m.key}]:${m.source}`);
}
