/**
 * The CLI's side of the contexts file (read and written by `@drover/cli-kit` contexts-file): which cluster a command talks to when no `--nats` flag says. Precedence, highest
 * first: the flags; the context named by `--context` or `DROVER_CONTEXT`; the `DROVER_NATS_*`
 * variables; the current context (not with `--nats`); the local cluster of `drover up`;
 * nats://127.0.0.1:4222.
 */
import { basename } from 'node:path';
import { contextsFileOf, readContextsFile, saveContext, writeContextsFile } from '@drover/cli-kit';
import { findContext, removeContext, type ClusterContext, type ContextsFile } from '@drover/common';
import { defaultNats, defaultTls } from './context.js';

/** The value of flag `--NAME VALUE` / `--NAME=VALUE` in raw arguments (before `--`), if any. */
function flagValue(args: readonly string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === '--') return undefined;
    if (a === `--${name}`) return args[i + 1] ?? '';
    if (a.startsWith(`--${name}=`)) return a.slice(name.length + 3);
  }
  return undefined;
}

/** The value of `--context NAME` / `--context=NAME` in raw arguments (before `--`), if any. */
export function contextFlag(args: readonly string[]): string | undefined {
  return flagValue(args, 'context');
}

/** Where a command connects when no flag says, and which context (if any) said it. */
export interface ClusterDefaults {
  nats: string;
  ca?: string;
  cert?: string;
  key?: string;
  context: string | null;
}

function fromContext(c: ClusterContext): ClusterDefaults {
  return {
    nats: c.nats.join(','),
    ...(c.caFile ? { ca: c.caFile } : {}),
    ...(c.certFile ? { cert: c.certFile } : {}),
    ...(c.keyFile ? { key: c.keyFile } : {}),
    context: c.name,
  };
}

/**
 * The defaults of `--nats` and `--nats-ca/cert/key` for `args` (the raw command line) and
 * `env`. A named context that does not exist is an error (NotFound).
 */
export function clusterDefaults(
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): ClusterDefaults {
  const named = contextFlag(args) ?? (env.DROVER_CONTEXT || undefined);
  const file = (): ContextsFile => readContextsFile(contextsFileOf(env));
  if (named !== undefined) return fromContext(findContext(file(), named));
  const fromEnv =
    env.DROVER_NATS_SERVERS || env.DROVER_NATS_CA || env.DROVER_NATS_CERT || env.DROVER_NATS_KEY;
  const natsFlag = flagValue(args, 'nats');
  // An explicit --nats names another cluster: the current context lends it no certificate, nor
  // does the local cluster unless the flag names it.
  if (!fromEnv && natsFlag === undefined) {
    const f = file();
    if (f.current !== null) return fromContext(findContext(f, f.current));
  }
  return { nats: defaultNats(env), ...defaultTls(env, natsFlag), context: null };
}

/** The context `drover up` writes for the local cluster in `dir`: `local`, or `local-<dir>`. */
export function localContextName(dir: string, defaultDir: string): string {
  if (dir === defaultDir) return 'local';
  const tail = basename(dir).replace(/[^A-Za-z0-9_.-]/g, '-');
  return `local-${tail}`.slice(0, 63);
}

/**
 * `drover up`: the local cluster as a context (its NATS, CA and operator certificate), current
 * when no other is, so `drover --context NAME` reaches it from anywhere. Written again by every
 * `up` (addresses and files may change); `drover down` removes it.
 */
export function saveLocalContext(
  name: string,
  cluster: {
    natsUrl: string;
    dir: string;
    tls?: { caFile: string; certFile: string; keyFile: string };
  },
  file = contextsFileOf(),
): { name: string; file: string; current: boolean } {
  return saveContext(
    {
      name,
      nats: [cluster.natsUrl],
      ...(cluster.tls ?? {}),
      source: `drover up --dir ${cluster.dir}`,
    },
    file,
  );
}

/** `drover down`: the local cluster's context gone (nothing to do when there is none). */
export function dropLocalContext(name: string, file = contextsFileOf()): boolean {
  const f = readContextsFile(file);
  if (!f.contexts.some((c) => c.name === name)) return false;
  writeContextsFile(file, removeContext(f, name));
  return true;
}
