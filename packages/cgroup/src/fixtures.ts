/** Test fixtures (not exported from mod.ts): a counter workload and cleanup of test cgroups. */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CgroupLayout } from './hierarchy.js';

/** A unique parent cgroup name for one test file run. */
export function testParent(): string {
  return `drover-test-${randomBytes(4).toString('hex')}`;
}

/** A shell that increments a number in `file` every 50 ms. */
export interface Counter {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves with the exit signal once the shell has exited. */
  readonly exited: Promise<NodeJS.Signals | null>;
  read(): Promise<number>;
}

/** Start the counter workload; wait until it has counted at least once. */
export async function startCounter(file: string): Promise<Counter> {
  // Write-then-rename: a freeze between `>`'s truncation and the write would otherwise leave
  // the file empty for as long as the job stays frozen.
  const script = `i=0; while :; do i=$((i+1)); echo $i > '${file}.tmp'; mv -f '${file}.tmp' '${file}'; sleep 0.05; done`;
  const child = spawn('sh', ['-c', script], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    child.once('exit', (_c, s) => resolve(s)),
  );
  if (child.pid === undefined) throw new Error('spawn sh failed');
  const pid = child.pid;
  const read = async (): Promise<number> => {
    // `>` truncates before writing: an empty read means "mid-write", so look again.
    for (let i = 0; i < 100; i++) {
      const text = existsSync(file) ? readFileSync(file, 'utf8').trim() : '';
      if (text !== '') return Number(text);
      await sleep(5);
    }
    throw new Error(`counter ${file} stays empty`);
  };
  await read();
  return { child, pid, exited, read };
}

/** A fresh temporary directory, removed by `removeTempDir`. */
export async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'drover-cgroup-test-'));
}

export async function removeTempDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/**
 * Cleanup for `after`, independent of the code under test: SIGKILL our own processes by PID, thaw
 * every test cgroup under `parent` in every hierarchy, then remove them deepest first.
 */
export async function cleanupTestCgroups(
  layout: CgroupLayout,
  parent: string,
  pids: number[],
): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const errors: unknown[] = [];
  const mounts = [layout.v2, layout.v1Freezer, layout.v1Memory].filter(
    (m): m is string => m !== null,
  );
  // Thaw everywhere before removing anything: a task frozen in v1 keeps its v2 cgroup busy too.
  for (const d of mounts.flatMap((m) => walk(join(m, parent)))) {
    if (existsSync(join(d, 'cgroup.freeze'))) writeFileSync(join(d, 'cgroup.freeze'), '0');
    if (existsSync(join(d, 'freezer.state'))) writeFileSync(join(d, 'freezer.state'), 'THAWED');
  }
  for (const mount of mounts) {
    for (const d of walk(join(mount, parent)).reverse()) {
      for (let i = 0; ; i++) {
        try {
          rmdirSync(d);
          break;
        } catch (err) {
          // Orphaned `sleep 0.05` children of a killed counter leave on their own.
          if ((err as { code?: string }).code === 'ENOENT') break;
          if (i > 100) {
            errors.push(err);
            break;
          }
          await sleep(30);
        }
      }
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, 'test cgroups left behind');
}

function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out = [dir];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) out.push(...walk(join(dir, e.name)));
  }
  return out;
}
