/** Field readers for the inventory: each records a problem with its location instead of throwing. */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import type { TlsFiles } from './inventory-model.js';

/** A map as it comes out of YAML. */
export type Raw = Record<string, unknown>;

/** Collects every problem with a location, so one run shows them all. */
export class Problems {
  readonly list: string[] = [];
  add(where: string, message: string): void {
    this.list.push(`${where}: ${message}`);
  }
}

export function isObject(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function checkKeys(p: Problems, where: string, obj: Raw, allowed: readonly string[]): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k))
      p.add(`${where}.${k}`, `unknown key (allowed: ${allowed.join(', ')})`);
  }
}

export function str(p: Problems, where: string, v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string' && v.trim() !== '') return v.trim();
  if (typeof v === 'number') return String(v);
  p.add(where, `expected a non-empty string, got ${JSON.stringify(v)}`);
  return undefined;
}

export function int(
  p: Problems,
  where: string,
  v: unknown,
  min: number,
  max: number,
): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
  p.add(where, `expected an integer ${min}..${max}, got ${JSON.stringify(v)}`);
  return undefined;
}

export function oneOf<T extends string>(
  p: Problems,
  where: string,
  v: unknown,
  values: readonly T[],
): T | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
  p.add(where, `expected one of ${values.join(', ')}, got ${JSON.stringify(v)}`);
  return undefined;
}

export function list(p: Problems, where: string, v: unknown): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  const items = typeof v === 'string' ? v.split(',') : Array.isArray(v) ? v : null;
  if (!items || items.length === 0 || items.some((s) => typeof s !== 'string' || !s.trim())) {
    p.add(where, 'expected a list of URLs (or one comma-separated string)');
    return undefined;
  }
  return items.map((s) => (s as string).trim());
}

/** Read a secret from a local file (first line, trimmed). */
export function secretFile(p: Problems, where: string, path: string): string | undefined {
  try {
    const s = readFileSync(path, 'utf8').split('\n')[0]?.trim() ?? '';
    if (s === '') p.add(where, `${path} is empty`);
    return s || undefined;
  } catch (err) {
    p.add(where, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    return undefined;
  }
}

/** A local path: `~/` is the operator's home; relative paths are relative to the inventory. */
export function localPath(base: string, path: string): string {
  if (path === '~' || path.startsWith('~/')) return resolve(homedir(), path.slice(2));
  return isAbsolute(path) ? path : resolve(base, path);
}

const TLS_KEYS = ['caFile', 'certFile', 'keyFile'];

/** A map of TLS files (`nats.tls`, `agent.streamTls`), paths resolved as {@link localPath}. */
export function tlsFiles(
  p: Problems,
  where: string,
  v: unknown,
  base: string,
): TlsFiles | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) {
    p.add(where, 'expected a map of caFile, certFile, keyFile');
    return undefined;
  }
  checkKeys(p, where, v, TLS_KEYS);
  const out: { caFile?: string; certFile?: string; keyFile?: string } = {};
  for (const k of TLS_KEYS as (keyof typeof out)[]) {
    const s = str(p, `${where}.${k}`, v[k]);
    if (s !== undefined) out[k] = localPath(base, s);
  }
  if ((out.certFile === undefined) !== (out.keyFile === undefined)) {
    p.add(where, 'certFile and keyFile go together');
  }
  return out;
}
