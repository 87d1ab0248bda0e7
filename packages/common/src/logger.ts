/** The logger interface libraries take by injection; apps decide where lines go (JSON lines). */
import { errorToJson } from './errors.js';

/** Severity of a log line, lowest first. */
export const LogLevel = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type LogLevel = keyof typeof LogLevel;

/** Structured fields carried on a log line (component, operation ids, figures). */
export type LogFields = Record<string, unknown>;

/** What every library accepts. `child` adds fields (e.g. `{component: 'criu', op: id}`). */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

/** A logger that drops everything: the default for libraries when none is injected. */
export const nullLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return nullLogger;
  },
};

/**
 * A JSON-lines logger writing to `write` (an app passes stderr). Errors in fields are written in
 * full — name, message, code, details, their causes and the errors attached during rollback
 * (`errorToJson`) — so lines stay JSON and nothing of why something failed is lost.
 */
export function jsonLogger(
  write: (line: string) => void,
  options: { level?: LogLevel; fields?: LogFields } = {},
): Logger {
  const min = LogLevel[options.level ?? 'info'];
  const base = options.fields ?? {};
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (LogLevel[level] < min) return;
    const line = { t: new Date().toISOString(), level, msg, ...base, ...flatten(fields) };
    write(JSON.stringify(line) + '\n');
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => jsonLogger(write, { ...options, fields: { ...base, ...fields } }),
  };
}

function flatten(fields: LogFields | undefined): LogFields {
  if (!fields) return {};
  const out: LogFields = {};
  for (const [k, v] of Object.entries(fields)) {
    out[k] = v instanceof Error ? errorToJson(v) : v;
  }
  return out;
}
