/**
 * A small, strict schema language for wire messages: every field typed and bounded, unknown keys
 * refused, errors that name the offending path. No I/O, no dependencies.
 */
import { DroverError, ErrorCode } from '@drover/common';

/** A parser from unknown input to T; throws InvalidMessageError naming the path. */
export interface Schema<T> {
  readonly kind: string;
  parse(value: unknown, path?: string): T;
}

/** The type a schema produces. */
export type Infer<S> = S extends Schema<infer T> ? T : never;

/**
 * A message (or a document: `subject` names it, e.g. "agent config /etc/drover/agent.json")
 * failed validation: `details.path` says where, `problem` what is wrong there.
 */
export class InvalidMessageError extends DroverError {
  constructor(
    path: string,
    readonly problem: string,
    subject?: string,
  ) {
    // A path names keys of the message, which may be huge: a reply must stay small.
    const where = path.length > MAX_PATH_IN_ERROR ? `${path.slice(0, MAX_PATH_IN_ERROR)}…` : path;
    const head =
      subject === undefined ? where || 'message' : where ? `${subject}: ${where}` : subject;
    super(ErrorCode.InvalidArgument, `${head}: ${problem}`, {
      details: { path: where },
    });
  }
}

/** Longest message path an error repeats (keys beyond it are cut). */
const MAX_PATH_IN_ERROR = 256;

/** Keys refused in every map: they cannot round-trip through plain objects. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

const fail = (path: string, problem: string): never => {
  throw new InvalidMessageError(path, problem);
};

const typeOf = (v: unknown): string =>
  v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;

/** A value as an error quotes it: short, JSON-quoted (never a pattern, never the whole input). */
function quote(v: string): string {
  return JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}…` : v);
}

/**
 * A string of bounded length, optionally matching a pattern. `what` says, for a human, what the
 * pattern allows ("an absolute path", "an id: ..."): the error names that, never the expression.
 */
export function str(
  opts: { min?: number; max?: number; pattern?: RegExp; what?: string } = {},
): Schema<string> {
  const max = opts.max ?? 4096;
  const min = opts.min ?? 0;
  return {
    kind: 'string',
    parse(v, path = '') {
      if (typeof v !== 'string') return fail(path, `expected text, got ${typeOf(v)}`);
      if (v.length > max) return fail(path, `is longer than ${max} characters`);
      if (v.length < min)
        return fail(path, min === 1 ? 'may not be empty' : `is shorter than ${min} characters`);
      if (v.includes('\0')) return fail(path, 'contains a NUL character');
      if (opts.pattern && !opts.pattern.test(v)) {
        return fail(
          path,
          opts.what
            ? `must be ${opts.what} (got ${quote(v)})`
            : `is not in a form allowed here (got ${quote(v)})`,
        );
      }
      return v;
    },
  };
}

/** An integer within bounds (default: a safe non-negative integer). */
export function int(opts: { min?: number; max?: number } = {}): Schema<number> {
  const min = opts.min ?? 0;
  const max = opts.max ?? Number.MAX_SAFE_INTEGER;
  return {
    kind: 'integer',
    parse(v, path = '') {
      if (typeof v !== 'number' || !Number.isInteger(v)) {
        return fail(path, `must be a whole number, got ${typeOf(v)}`);
      }
      if (v < min || v > max)
        return fail(
          path,
          max === Number.MAX_SAFE_INTEGER
            ? `must be at least ${min} (got ${v})`
            : `must be between ${min} and ${max} (got ${v})`,
        );
      return v;
    },
  };
}

/** A finite number within bounds. */
export function num(opts: { min?: number; max?: number } = {}): Schema<number> {
  return {
    kind: 'number',
    parse(v, path = '') {
      if (typeof v !== 'number' || !Number.isFinite(v))
        return fail(path, `expected number, got ${typeOf(v)}`);
      if (opts.min !== undefined && v < opts.min) return fail(path, `below ${opts.min}`);
      if (opts.max !== undefined && v > opts.max) return fail(path, `above ${opts.max}`);
      return v;
    },
  };
}

/** A boolean. */
export function bool(): Schema<boolean> {
  return {
    kind: 'boolean',
    parse(v, path = '') {
      return typeof v === 'boolean' ? v : fail(path, `expected boolean, got ${typeOf(v)}`);
    },
  };
}

/** One of a fixed set of strings. */
export function oneOf<const T extends readonly string[]>(values: T): Schema<T[number]> {
  return {
    kind: `one of ${values.join('|')}`,
    parse(v, path = '') {
      return typeof v === 'string' && (values as readonly string[]).includes(v)
        ? (v as T[number])
        : fail(
            path,
            `must be one of ${values.join(', ')}${typeof v === 'string' ? ` (got ${quote(v)})` : ''}`,
          );
    },
  };
}

/** An array of bounded length. */
export function arr<T>(item: Schema<T>, opts: { max?: number; min?: number } = {}): Schema<T[]> {
  const max = opts.max ?? 1024;
  return {
    kind: `array of ${item.kind}`,
    parse(v, path = '') {
      if (!Array.isArray(v)) return fail(path, `expected array, got ${typeOf(v)}`);
      if (v.length > max) return fail(path, `has more than ${max} items`);
      if (v.length < (opts.min ?? 0))
        return fail(path, `needs at least ${opts.min} item${opts.min === 1 ? '' : 's'}`);
      return v.map((x, i) => item.parse(x, `${path}[${i}]`));
    },
  };
}

/** A string-keyed map of bounded size (keys are bounded strings too). */
export function dict<T>(
  value: Schema<T>,
  opts: { maxKeys?: number; key?: Schema<string> } = {},
): Schema<Record<string, T>> {
  const maxKeys = opts.maxKeys ?? 256;
  const key = opts.key ?? str({ min: 1, max: 256 });
  return {
    kind: `map of ${value.kind}`,
    parse(v, path = '') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        return fail(path, `expected object, got ${typeOf(v)}`);
      }
      const entries = Object.entries(v);
      if (entries.length > maxKeys) return fail(path, `has more than ${maxKeys} keys`);
      const out: Record<string, T> = Object.create(null) as Record<string, T>;
      for (const [k, x] of entries) {
        if (FORBIDDEN_KEYS.has(k)) fail(`${path}{key}`, `key ${k} is not allowed`);
        out[key.parse(k, `${path}{key}`)] = value.parse(x, `${path}.${k}`);
      }
      return out;
    },
  };
}

const OPTIONAL = Symbol('optional');
/** A schema whose field may be absent (undefined). */
export interface OptionalSchema<T> extends Schema<T | undefined> {
  readonly [OPTIONAL]: true;
}

/** Mark an object field optional. */
export function opt<T>(inner: Schema<T>): OptionalSchema<T> {
  return {
    [OPTIONAL]: true,
    kind: `optional ${inner.kind}`,
    parse(v, path = '') {
      return v === undefined ? undefined : inner.parse(v, path);
    },
  };
}

type Shape = Record<string, Schema<unknown>>;
type OptionalKeys<S extends Shape> = {
  [K in keyof S]: S[K] extends OptionalSchema<unknown> ? K : never;
}[keyof S];
type RequiredKeys<S extends Shape> = Exclude<keyof S, OptionalKeys<S>>;
/** The object type a shape describes (optional fields may be absent). */
export type ObjectOf<S extends Shape> = { [K in RequiredKeys<S>]: Infer<S[K]> } & {
  [K in OptionalKeys<S>]?: Exclude<Infer<S[K]>, undefined>;
};

/** An object schema; `shape` lets another schema extend it. */
export interface ObjectSchema<S extends Shape> extends Schema<ObjectOf<S>> {
  readonly shape: S;
}

/** An object with exactly these fields; unknown keys are refused. */
export function obj<S extends Shape>(shape: S): ObjectSchema<S> {
  return {
    kind: 'object',
    shape,
    parse(v, path = '') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        return fail(path, `expected object, got ${typeOf(v)}`);
      }
      const input = v as Record<string, unknown>;
      for (const k of Object.keys(input)) {
        if (!Object.hasOwn(shape, k)) fail(path ? `${path}.${k}` : k, 'unknown field');
      }
      const out: Record<string, unknown> = {};
      for (const [k, s] of Object.entries(shape)) {
        const where = path ? `${path}.${k}` : k;
        if (input[k] === undefined && !(OPTIONAL in s)) fail(where, 'is required');
        const parsed = s.parse(input[k], where);
        if (parsed !== undefined) out[k] = parsed;
      }
      return out as ObjectOf<S>;
    },
  };
}

/**
 * An object with at least these fields, each checked; its other fields pass through unchecked.
 * For documents of which a reader relies on a few fields only (a persisted heartbeat), never for
 * a request: those refuse what they do not know ({@link obj}).
 */
export function objWith<S extends Shape>(shape: S): Schema<ObjectOf<S> & Record<string, unknown>> {
  const strict = obj(shape);
  return {
    kind: 'object',
    parse(v, path = '') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        return fail(path, `expected object, got ${typeOf(v)}`);
      }
      const known = Object.fromEntries(Object.entries(v).filter(([k]) => Object.hasOwn(shape, k)));
      return { ...(v as Record<string, unknown>), ...strict.parse(known, path) };
    },
  };
}

/** Any JSON value (bounded by the message size limit only); for opaque payloads. */
export function json(): Schema<unknown> {
  return { kind: 'json', parse: (v) => v };
}

/**
 * Either of two schemas, tried in order. When both refuse, the error is the one that got further
 * into the value (the other refused it at the top).
 */
export function either<A, B>(a: Schema<A>, b: Schema<B>): Schema<A | B> {
  return {
    kind: `${a.kind} or ${b.kind}`,
    parse(v, path = '') {
      try {
        return a.parse(v, path);
      } catch (errA) {
        if (!(errA instanceof InvalidMessageError)) throw errA;
        try {
          return b.parse(v, path);
        } catch (errB) {
          if (!(errB instanceof InvalidMessageError)) throw errB;
          const deeper = (e: InvalidMessageError): boolean => e.details['path'] !== path;
          if (deeper(errA)) throw errA;
          if (deeper(errB)) throw errB;
          return fail(path, `expected ${a.kind} or ${b.kind}, got ${typeOf(v)}`);
        }
      }
    },
  };
}

/**
 * A JSON document read from outside the wire (a config file, a persisted record) parsed and
 * checked against `schema`. Refused as InvalidMessageError whose message starts with `what` and
 * names the offending field (`details.path`); a syntax error names no field.
 */
export function parseJsonAs<T>(schema: Schema<T>, text: string, what: string): T {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new InvalidMessageError('', `${(err as Error).message}`, what);
  }
  try {
    return schema.parse(value, '');
  } catch (err) {
    if (!(err instanceof InvalidMessageError)) throw err;
    throw new InvalidMessageError(String(err.details['path'] ?? ''), err.problem, what);
  }
}
