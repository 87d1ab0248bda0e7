/** Running one step on many hosts: bounded parallelism, a result per host, one host's failure never stops another. */
import { isDroverError, mapLimit } from '@drover/common';
import { DeployError } from './errors.js';
import type { HostEntry } from './inventory.js';
import { HostOps } from './remote.js';
import { SshSession } from './ssh.js';

/** How one host fared. */
export interface HostResult {
  host: string;
  ok: boolean;
  /** Whether anything on the host changed. */
  changed: boolean;
  /** One line for the table. */
  detail: string;
  /** What the verb learned (JSON output). */
  data: Record<string, unknown>;
  error: {
    code: string;
    failure: string | null;
    step: string | null;
    message: string;
    exitCode: number | null;
    stderrTail: string | null;
  } | null;
}

/** What a verb returns for a host that succeeded. */
export interface HostOutcome {
  changed: boolean;
  detail: string;
  data?: Record<string, unknown>;
}

/** Progress of one host, one message at a time. */
export type Progress = (host: string, message: string) => void;

/** A failed host's result (the error as operators should read it). */
export function failedResult(host: string, err: unknown): HostResult {
  const message = err instanceof Error ? err.message : String(err);
  const de = err instanceof DeployError ? err : null;
  // What the verb learned before failing (facts, problems) rides in the error's details.
  const {
    host: _h,
    failure: _f,
    step: _s,
    exitCode: _e,
    changed,
    ...data
  } = isDroverError(err) ? err.details : {};
  return {
    host,
    ok: false,
    // A step that failed after changing the host says so (`details.changed`).
    changed: changed === true,
    detail: message,
    data,
    error: {
      code: isDroverError(err) ? err.code : 'INTERNAL',
      failure: de?.failure ?? null,
      step: de?.step ?? null,
      message,
      exitCode: de?.exitCode ?? null,
      stderrTail: de?.stderrTail || null,
    },
  };
}

/** The result of one step on one host (or row): its outcome, or its failure. */
export async function resultOf(row: string, fn: () => Promise<HostOutcome>): Promise<HostResult> {
  try {
    const o = await fn();
    return {
      host: row,
      ok: true,
      changed: o.changed,
      detail: o.detail,
      data: o.data ?? {},
      error: null,
    };
  } catch (err) {
    return failedResult(row, err);
  }
}

/** Run `fn` for each host, at most `parallel` at once; results in the hosts' order. */
export async function forEachHost(
  hosts: readonly HostEntry[],
  parallel: number,
  fn: (host: HostEntry) => Promise<HostOutcome>,
): Promise<HostResult[]> {
  // `fn` failing is a host's result, not the fleet's: every host is tried.
  return mapLimit(hosts, parallel, (h) => resultOf(h.name, () => fn(h)));
}

/** Connect to a host, run `fn` with its remote steps, always clean up and disconnect. */
export async function withHost<T>(
  host: HostEntry,
  progress: Progress,
  fn: (ops: HostOps) => Promise<T>,
): Promise<T> {
  const ssh = await SshSession.connect(host);
  const ops = new HostOps(ssh, (m) => progress(host.name, m));
  try {
    return await fn(ops);
  } finally {
    await ops.cleanup().catch(() => {});
    ssh.close();
  }
}
