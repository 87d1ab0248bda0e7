/**
 * The nats-server binary the testbed and the local cluster start: the one deploy/setup-host.sh
 * installs in /usr/local/sbin, else the PATH's, and only if it is at least NATS_SERVER_MIN.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { NATS_SERVER_MIN, serverVersionAtLeast } from '@drover/bus';
import { DroverError, ErrorCode } from '@drover/common';
import { run } from './proc.js';

/** Where deploy/setup-host.sh puts a current nats-server when the machine's suite is older. */
export const SETUP_NATS_SERVER = '/usr/local/sbin/nats-server';

/** A nats-server binary and its version. */
export interface NatsServerBin {
  path: string;
  version: string;
}

let found: Promise<NatsServerBin> | null = null;

function executable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The version a nats-server binary prints (`nats-server: v2.15.1`), or null. */
async function versionOf(path: string): Promise<string | null> {
  const r = await run([path, '--version'], { timeoutMs: 10_000 }).catch(() => null);
  return /v?(\d+\.\d+\.\d+)/.exec(r?.stdout ?? '')?.[1] ?? null;
}

/**
 * The nats-server to start (looked up once per process). FAILED_PRECONDITION, naming what was
 * found, when there is none at least NATS_SERVER_MIN.
 */
export function natsServerBin(pathEnv = process.env.PATH ?? ''): Promise<NatsServerBin> {
  found ??= (async () => {
    const candidates = [
      SETUP_NATS_SERVER,
      ...pathEnv
        .split(delimiter)
        .filter((d) => d !== '')
        .map((d) => join(d, 'nats-server')),
    ];
    const seen: string[] = [];
    for (const path of [...new Set(candidates)].filter(executable)) {
      const version = await versionOf(path);
      if (version !== null && serverVersionAtLeast(version)) return { path, version };
      seen.push(`${path} (${version ?? 'no version'})`);
    }
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `no nats-server >= ${NATS_SERVER_MIN} on this machine` +
        `${seen.length ? ` (found ${seen.join(', ')})` : ''}: run deploy/setup-host.sh as root`,
      { details: { found: seen, min: NATS_SERVER_MIN } },
    );
  })().catch((err: unknown) => {
    found = null;
    throw err;
  });
  return found;
}
