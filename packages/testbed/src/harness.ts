/** The suite-facing harness: run a body against a fresh testbed, always tear down, keep logs on failure. */
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import { settleLeftovers, Testbed, type TestbedOptions } from '@drover/local-cluster';

/** Options for {@link withTestbed} on top of the testbed's own. */
export interface HarnessOptions extends TestbedOptions {
  /** Where logs are collected on failure. Default /tmp/drover-testbed-logs/<runId>. */
  failureLogDir?: string;
  /** After teardown, fail if anything of the run is left (default true). */
  checkLeftovers?: boolean;
}

/** A suite body failed, or the testbed did not come down clean; logs are in `details.logDir`. */
export class TestbedError extends DroverError {
  constructor(message: string, runId: string, logDir: string | undefined, cause: unknown) {
    super(ErrorCode.Internal, message, { cause, details: { runId, logDir } });
  }
}

/**
 * Copy every log of the run (host inits, spawned processes, NATS, sshd) to `dir`, plus a snapshot
 * of each live host's processes, addresses and routes. Best effort: never throws.
 */
export async function collectLogs(tb: Testbed, dir: string): Promise<string> {
  try {
    mkdirSync(dir, { recursive: true });
    cpSync(tb.logDir, dir, { recursive: true });
    const lines: string[] = [`run ${tb.runId} bridge ${tb.bridge} ${tb.bridgeAddress}/24`];
    for (const h of tb.hosts) {
      lines.push(`\n== ${h.name} ${h.address} initPid=${h.initPid} dead=${h.dead}`);
      if (h.dead) continue;
      for (const cmd of [
        ['ps', '-ef'],
        ['ip', 'addr'],
        ['ip', 'route'],
      ]) {
        const r = await h
          .exec(cmd, { timeoutMs: 3000 })
          .catch((e: unknown) => ({ stdout: '', stderr: String(e) }));
        lines.push(`$ ${cmd.join(' ')}\n${r.stdout}${r.stderr}`);
      }
    }
    writeFileSync(join(dir, 'testbed.txt'), lines.join('\n') + '\n');
  } catch {
    // collecting logs must never mask the failure being reported
  }
  return dir;
}

/**
 * Create a testbed, run `body` with it, and always tear it down. On failure the logs of
 * everything are collected first and the thrown TestbedError names their directory (the
 * original error is its `cause`). On success, leftovers after teardown are a failure too.
 */
export async function withTestbed<T>(
  opts: HarnessOptions,
  body: (tb: Testbed) => Promise<T>,
): Promise<T> {
  const tb = await Testbed.create(opts);
  const logDirFor = (): string => opts.failureLogDir ?? join('/tmp/drover-testbed-logs', tb.runId);
  let result: T;
  try {
    result = await body(tb);
  } catch (err) {
    const dir = await collectLogs(tb, logDirFor());
    const msg = err instanceof Error ? err.message : String(err);
    const failure = new TestbedError(
      `testbed ${tb.runId}: ${msg} (logs: ${dir})`,
      tb.runId,
      dir,
      err,
    );
    await tb.teardown().catch((e: unknown) => failure.suppress(e));
    throw failure;
  }
  try {
    await tb.teardown();
  } catch (err) {
    const dir = await collectLogs(tb, logDirFor());
    throw new TestbedError(
      `testbed ${tb.runId}: teardown failed (logs: ${dir})`,
      tb.runId,
      dir,
      err,
    );
  }
  if (opts.checkLeftovers ?? true) {
    const left = await settleLeftovers(tb.runId, 3000, opts.baseDir);
    if (left.length > 0) {
      const list = left.map((l) => `${l.kind} ${l.name}`).join(', ');
      throw new TestbedError(
        `testbed ${tb.runId} left resources behind: ${list}`,
        tb.runId,
        undefined,
        left,
      );
    }
  }
  return result;
}
