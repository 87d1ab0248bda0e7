/**
 * The contexts file: how an operator's CLI finds its clusters, as kubectl's kubeconfig does.
 * Each context names a cluster's NATS URLs and the files this operator connects with (the
 * cluster CA, an operator certificate and its key); one may be current. `drover-deploy install`
 * writes one, `drover context` lists and switches them, and `drover --context NAME` (or
 * `DROVER_CONTEXT`) picks one. Pure: parsing, validation and edits; the apps read and write the
 * file (JSON, mode 0600) at {@link contextsPath}.
 */
import { DroverError, ErrorCode } from './errors.js';

/** One cluster as a CLI reaches it. Paths are absolute, on the operator's machine. */
export interface ClusterContext {
  readonly name: string;
  readonly nats: readonly string[];
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
  /** Who wrote it (`drover-deploy install <inventory>`), for `drover context ls`. */
  readonly source?: string;
}

/** The file's content. */
export interface ContextsFile {
  readonly format: 1;
  readonly current: string | null;
  readonly contexts: readonly ClusterContext[];
}

/** A context name: what a shell and a file name take without quoting. */
export const CONTEXT_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** An empty file's content. */
export const NO_CONTEXTS: ContextsFile = Object.freeze({ format: 1, current: null, contexts: [] });

/**
 * Where the file is: `$DROVER_CONFIG`, else `$XDG_CONFIG_HOME/drover/contexts.json`, else
 * `<home>/.config/drover/contexts.json`.
 */
export function contextsPath(env: Readonly<Record<string, string | undefined>>, home: string) {
  if (env.DROVER_CONFIG) return env.DROVER_CONFIG;
  const base = env.XDG_CONFIG_HOME || `${home.replace(/\/+$/, '')}/.config`;
  return `${base}/drover/contexts.json`;
}

function bad(where: string, message: string): DroverError {
  return new DroverError(ErrorCode.InvalidArgument, `contexts file ${where}: ${message}`);
}

/** Check one context (from a file or to be written). */
export function checkContext(c: unknown, where = 'context'): ClusterContext {
  if (typeof c !== 'object' || c === null) throw bad(where, 'expected a map');
  const r = c as Record<string, unknown>;
  if (typeof r.name !== 'string' || !CONTEXT_NAME_PATTERN.test(r.name))
    throw bad(where, `bad name ${JSON.stringify(r.name)} (letters, digits, _ . -)`);
  if (!Array.isArray(r.nats) || r.nats.length === 0 || r.nats.some((u) => typeof u !== 'string'))
    throw bad(`${where} (${r.name})`, 'nats must be a non-empty list of URLs');
  const out: Record<string, unknown> = { name: r.name, nats: [...(r.nats as string[])] };
  for (const k of ['caFile', 'certFile', 'keyFile', 'source'] as const) {
    if (r[k] === undefined) continue;
    if (typeof r[k] !== 'string') throw bad(`${where} (${r.name}).${k}`, 'expected a string');
    if (k !== 'source' && !(r[k] as string).startsWith('/'))
      throw bad(`${where} (${r.name}).${k}`, `must be an absolute path, got ${String(r[k])}`);
    out[k] = r[k];
  }
  if ((out.certFile === undefined) !== (out.keyFile === undefined))
    throw bad(`${where} (${r.name})`, 'certFile and keyFile go together');
  return out as unknown as ClusterContext;
}

/** Parse and check the file's text (`where` names it in errors). */
export function parseContexts(text: string, where: string): ContextsFile {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw bad(where, `not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (typeof doc !== 'object' || doc === null) throw bad(where, 'expected a JSON object');
  const d = doc as Record<string, unknown>;
  if (d.format !== 1) throw bad(where, `unknown format ${JSON.stringify(d.format)}`);
  const list = Array.isArray(d.contexts) ? d.contexts : [];
  const contexts = list.map((c, i) => checkContext(c, `${where} contexts[${i}]`));
  const names = new Set<string>();
  for (const c of contexts) {
    if (names.has(c.name)) throw bad(where, `context ${c.name} is listed twice`);
    names.add(c.name);
  }
  const current = typeof d.current === 'string' && names.has(d.current) ? d.current : null;
  return { format: 1, current, contexts };
}

/** The file's text for `f`. */
export function formatContexts(f: ContextsFile): string {
  return JSON.stringify(f, null, 2) + '\n';
}

/**
 * `f` with `ctx` added or replacing the context of its name; it becomes current when
 * `makeCurrent`, or when no context is current.
 */
export function upsertContext(
  f: ContextsFile,
  ctx: ClusterContext,
  makeCurrent: boolean,
): ContextsFile {
  const c = checkContext(ctx);
  const contexts = [...f.contexts.filter((x) => x.name !== c.name), c].sort((a, b) =>
    a.name.localeCompare(b.name),
  );
  return { format: 1, current: makeCurrent || f.current === null ? c.name : f.current, contexts };
}

/** `f` with `name` current; refused when there is no such context. */
export function useContext(f: ContextsFile, name: string): ContextsFile {
  findContext(f, name);
  return { ...f, current: name };
}

/** `f` without context `name` (no longer current if it was). */
export function removeContext(f: ContextsFile, name: string): ContextsFile {
  findContext(f, name);
  return {
    format: 1,
    current: f.current === name ? null : f.current,
    contexts: f.contexts.filter((c) => c.name !== name),
  };
}

/** The context `name`, or a NotFound error that lists the others. */
export function findContext(f: ContextsFile, name: string): ClusterContext {
  const c = f.contexts.find((x) => x.name === name);
  if (!c) {
    const known = f.contexts.map((x) => x.name).join(', ') || 'none';
    throw new DroverError(ErrorCode.NotFound, `no context ${name} (contexts: ${known})`);
  }
  return c;
}
