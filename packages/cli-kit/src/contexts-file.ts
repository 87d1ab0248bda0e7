/**
 * The contexts file on disk (its format: `@drover/common` cluster-contexts): where it is, reading
 * it, writing it atomically with mode 0600 (it names key files), and adding one context — what
 * `drover` (context, up, down) and `drover-deploy install` share.
 */
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname } from 'node:path';
import {
  contextsPath,
  formatContexts,
  NO_CONTEXTS,
  parseContexts,
  upsertContext,
  type ClusterContext,
  type ContextsFile,
} from '@drover/common';

/** The contexts file's path for this environment. */
export function contextsFileOf(env: NodeJS.ProcessEnv = process.env): string {
  return contextsPath(env, env.HOME || homedir());
}

/** The contexts file (empty when it does not exist). */
export function readContextsFile(path: string): ContextsFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return NO_CONTEXTS;
    throw err;
  }
  return parseContexts(text, path);
}

/** Write the contexts file atomically, 0600. */
export function writeContextsFile(path: string, f: ContextsFile): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, formatContexts(f), { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** Add (or replace) `ctx` in `file`; it becomes current only when no context is. */
export function saveContext(
  ctx: ClusterContext,
  file = contextsFileOf(),
): { name: string; file: string; current: boolean } {
  const after = upsertContext(readContextsFile(file), ctx, false);
  writeContextsFile(file, after);
  return { name: ctx.name, file, current: after.current === ctx.name };
}
