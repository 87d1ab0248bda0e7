/**
 * A job's own /etc/hosts: a file of its job directory, bound over /etc/hosts in the job's mount
 * namespace, listing its own names and the cluster's named jobs (`drover run --name`), which the
 * controller publishes. It travels with the job (its directory does) and is rewritten in place
 * whenever the names change, so lookups inside the job always see where every named job is.
 */
import { writeAtomicNoFollow, rewriteNoFollow } from './job-dir-fs.js';
import { hostsFileOf } from './job-image.js';
import type { JobRecord } from './job-store.js';

/** One named job: the name other jobs resolve, and its address. */
export interface NameEntry {
  name: string;
  address: string;
}

/** A name /etc/hosts can carry (RFC 1123 labels). */
const HOSTNAME_RE =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** The file's text for `job` given the cluster's `names`. */
export function renderHosts(
  job: Pick<JobRecord, 'id' | 'name' | 'hostname'>,
  address: string,
  names: readonly NameEntry[],
): string {
  const own = [...new Set([job.hostname ?? job.id, job.name].filter((n) => HOSTNAME_RE.test(n)))];
  const lines = [
    "# This job's /etc/hosts, kept by drover (docs/NETWORK.md): its own names and the",
    "# cluster's named jobs. Changes made here are overwritten when names change.",
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    `${address}\t${own.join(' ')}`,
  ];
  for (const e of [...names].sort((a, b) => a.name.localeCompare(b.name))) {
    if (own.includes(e.name) || !HOSTNAME_RE.test(e.name)) continue;
    lines.push(`${e.address}\t${e.name}`);
  }
  return lines.join('\n') + '\n';
}

/** Create the job's hosts file before it starts (mode 0644: any user of the job reads it). */
export async function createHostsFile(
  job: Pick<JobRecord, 'id' | 'name' | 'hostname' | 'jobDir'>,
  address: string,
  names: readonly NameEntry[],
): Promise<string> {
  const path = hostsFileOf(job);
  await writeAtomicNoFollow(path, renderHosts(job, address, names), 0o644);
  return path;
}

/** Rewrite a running job's hosts file in place (its bind mount keeps the inode). */
export async function updateHostsFile(
  job: Pick<JobRecord, 'id' | 'name' | 'hostname' | 'jobDir'>,
  address: string,
  names: readonly NameEntry[],
): Promise<void> {
  await rewriteNoFollow(hostsFileOf(job), renderHosts(job, address, names));
}
