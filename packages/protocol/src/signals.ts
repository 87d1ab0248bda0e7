/**
 * Signals by name or number, the way `kill`, `docker kill -s` and `kubectl` users type them:
 * `USR1`, `usr1`, `SIGUSR1`, `10`, `SIGRTMIN+2`, `RTMAX-1`, `40`. One canonical name per signal
 * crosses the wire (`SIGUSR1`, `SIGRTMIN+2`); agents send it by number. Linux numbering (the
 * same on x86-64 and arm64); real-time signals as the C library numbers them (SIGRTMIN is 34:
 * 32 and 33 are the C library's own).
 */
import { DroverError, ErrorCode } from '@drover/common';
import { InvalidMessageError, type Schema } from './schema.js';

/** The standard signals and their Linux numbers. */
export const STANDARD_SIGNALS = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGSTKFLT: 16,
  SIGCHLD: 17,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGURG: 23,
  SIGXCPU: 24,
  SIGXFSZ: 25,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGWINCH: 28,
  SIGIO: 29,
  SIGPWR: 30,
  SIGSYS: 31,
} as const;

/** Other names of the same signals (accepted, never sent). */
const ALIASES: Record<string, keyof typeof STANDARD_SIGNALS> = {
  SIGIOT: 'SIGABRT',
  SIGPOLL: 'SIGIO',
  SIGCLD: 'SIGCHLD',
};

/** The first and last real-time signal, as `kill -l` numbers them. */
export const SIGRTMIN = 34;
export const SIGRTMAX = 64;

/** A signal, resolved. */
export interface JobSignal {
  /** Canonical name: `SIGUSR1`, `SIGRTMIN`, `SIGRTMIN+3`, `SIGRTMAX-2`, `SIGRTMAX`. */
  name: string;
  number: number;
}

const HINT =
  'a signal name with or without SIG, in any case (USR1, sigterm), a number (10), ' +
  'or a real-time signal (SIGRTMIN, SIGRTMIN+3, RTMAX-1, 34..64)';

/** The canonical name of signal number `n` (1..31, 34..64). */
export function signalName(n: number): string | null {
  for (const [name, num] of Object.entries(STANDARD_SIGNALS)) if (num === n) return name;
  if (n === SIGRTMIN) return 'SIGRTMIN';
  if (n === SIGRTMAX) return 'SIGRTMAX';
  // `kill -l` names the lower half from RTMIN up and the upper half from RTMAX down.
  if (n > SIGRTMIN && n <= 49) return `SIGRTMIN+${n - SIGRTMIN}`;
  if (n >= 50 && n < SIGRTMAX) return `SIGRTMAX-${SIGRTMAX - n}`;
  return null;
}

/**
 * Resolve what an operator typed into one signal, or throw INVALID_ARGUMENT saying what is
 * accepted. Signal 0 (a liveness probe) and 32/33 (the C library's) are refused.
 */
export function parseSignal(input: string | number): JobSignal {
  const text = String(input).trim();
  const bad = (why: string): never => {
    throw new DroverError(ErrorCode.InvalidArgument, `${why}; give ${HINT}`, {
      details: { signal: text.slice(0, 64) },
    });
  };
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    if (n === 32 || n === 33)
      return bad(`signal ${n} is reserved by the C library (real-time signals start at 34)`);
    const name = signalName(n);
    return name ? { name, number: n } : bad(`no signal number ${text}`);
  }
  const upper = text.toUpperCase().replace(/\s+/g, '');
  const bare = upper.startsWith('SIG') ? upper.slice(3) : upper;
  const rt = /^RT(MIN|MAX)(?:([+-])(\d{1,2}))?$/.exec(bare);
  if (rt) {
    const base = rt[1] === 'MIN' ? SIGRTMIN : SIGRTMAX;
    const offset = rt[3] === undefined ? 0 : Number(rt[3]) * (rt[2] === '+' ? 1 : -1);
    const n = base + offset;
    if (n < SIGRTMIN || n > SIGRTMAX)
      return bad(`${text} is outside the real-time signals (SIGRTMIN..SIGRTMAX, 34..64)`);
    return { name: signalName(n)!, number: n };
  }
  const name = `SIG${bare}`;
  const canonical = ALIASES[name] ?? name;
  if (Object.hasOwn(STANDARD_SIGNALS, canonical)) {
    return {
      name: canonical,
      number: STANDARD_SIGNALS[canonical as keyof typeof STANDARD_SIGNALS],
    };
  }
  return bad(`unknown signal ${JSON.stringify(text.slice(0, 64))}`);
}

/** Schema of a signal on the wire: anything {@link parseSignal} accepts, canonicalized. */
export function signalSchema(): Schema<string> {
  return {
    kind: 'signal',
    parse(v, path = '') {
      if (typeof v !== 'string' && typeof v !== 'number')
        throw new InvalidMessageError(path, `expected a signal, got ${typeof v}`);
      try {
        return parseSignal(v).name;
      } catch (err) {
        throw new InvalidMessageError(path, (err as Error).message);
      }
    },
  };
}
