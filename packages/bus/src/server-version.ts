/**
 * Which nats-server Drover expects: >= 2.12, the oldest whose behaviour the project's tests
 * have shown right where 2.9 (Debian 12's) was wrong — compare-and-set on replicated buckets,
 * the space of deleted objects given back — and the check of a connected server against it.
 */
import { DroverError, ErrorCode } from '@drover/common';
import type { Bus } from './connection.js';

/** The oldest nats-server Drover expects (deploy/setup-host.sh installs one at least this new). */
export const NATS_SERVER_MIN = '2.12.0';

/** `[major, minor, patch]` of a version like `2.15.1` or `v2.10.26-beta`; null if unreadable. */
export function parseServerVersion(v: string | undefined): [number, number, number] | null {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(v ?? '');
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

/** True when `version` is at least `min` (an unreadable version is not). */
export function serverVersionAtLeast(version: string | undefined, min = NATS_SERVER_MIN): boolean {
  const a = parseServerVersion(version);
  const b = parseServerVersion(min)!;
  if (a === null) return false;
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! > b[i]!;
  return true;
}

/** The version of the server `bus` is connected to now (`unknown` before it said). */
export function serverVersionOf(bus: Bus): string {
  return bus.nc.info?.version ?? 'unknown';
}

/**
 * What an older server means for the caller, or null when it is new enough. With `replicas` > 1
 * it is an error (FAILED_PRECONDITION): 2.9.x lets concurrent compare-and-set writes of one
 * revision all pass on a replicated stream, so state would be lost.
 */
export function serverVersionProblem(
  version: string,
  replicas = 1,
): { error: DroverError } | { warning: string } | null {
  if (serverVersionAtLeast(version)) return null;
  const why =
    `nats-server ${version} is older than ${NATS_SERVER_MIN} ` +
    '(deploy/setup-host.sh installs a current one)';
  if (replicas > 1) {
    return {
      error: new DroverError(
        ErrorCode.FailedPrecondition,
        `${why}: replicated state needs it (older servers let concurrent compare-and-set writes all pass)`,
        { details: { version, min: NATS_SERVER_MIN, replicas } },
      ),
    };
  }
  return { warning: `${why}: deleted image sets keep their space until the server restarts` };
}
