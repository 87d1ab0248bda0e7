/** Finds a usable CRIU binary (>= 4.2) on this host, or says exactly why there is none. */
import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { CriuNotProvisionedError } from './errors.js';

const run = promisify(execFile);

/** The oldest CRIU Drover accepts: 4.1 cannot dump sockets on kernels >= 6.16. */
export const MIN_CRIU_VERSION = '4.2.0';

/** A CRIU binary found on this host. */
export interface CriuBinary {
  path: string;
  version: string;
}

/** Compare dotted versions numerically: negative, zero or positive. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((x) => Number.parseInt(x, 10) || 0);
  const pb = b.split('.').map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Parse `criu --version` output (`Version: 4.2.1`). */
export function parseCriuVersion(output: string): string | null {
  const m = /^Version:\s*([0-9]+(?:\.[0-9]+)*)/m.exec(output);
  return m ? m[1]! : null;
}

/**
 * The first CRIU >= `minVersion` among `candidates` (default: /usr/local/sbin/criu, then PATH).
 * Throws CriuNotProvisionedError naming every binary seen and why it was rejected.
 */
export async function findCriu(
  options: { minVersion?: string; candidates?: readonly string[]; pathEnv?: string } = {},
): Promise<CriuBinary> {
  const min = options.minVersion ?? MIN_CRIU_VERSION;
  const candidates = options.candidates ?? [
    '/usr/local/sbin/criu',
    ...(options.pathEnv ?? '')
      .split(delimiter)
      .filter(Boolean)
      .map((d) => join(d, 'criu')),
    '/usr/sbin/criu',
  ];
  const seen: string[] = [];
  for (const path of new Set(candidates)) {
    try {
      await access(path, constants.X_OK);
    } catch {
      continue;
    }
    let version: string | null = null;
    try {
      const { stdout } = await run(path, ['--version'], { timeout: 10_000 });
      version = parseCriuVersion(stdout);
    } catch (err) {
      seen.push(`${path}: --version failed (${(err as Error).message.split('\n')[0]})`);
      continue;
    }
    if (version === null) {
      seen.push(`${path}: unrecognised --version output`);
    } else if (compareVersions(version, min) < 0) {
      seen.push(`${path}: version ${version} < ${min}`);
    } else {
      return { path, version };
    }
  }
  const why = seen.length ? `; found ${seen.join('; ')}` : '; none found';
  throw new CriuNotProvisionedError(`no CRIU >= ${min} on this host${why}`, {
    details: { candidates: [...new Set(candidates)], rejected: seen },
  });
}
