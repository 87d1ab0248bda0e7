/**
 * A job's checkpoint options: the CRIU options a job may ask for, by name, from one fixed list
 * (never a free-form CRIU flag), their wire schema, their text form (`--checkpoint-opt NAME[=V]`),
 * and how a job's own choices, its host's defaults and Drover's defaults combine.
 */
import { DroverError, ErrorCode } from '@drover/common';
import { bool, int, obj, opt, type Infer } from './schema.js';

/** CRIU's ghost-file limit is a 32-bit byte count. */
export const MAX_GHOST_LIMIT_BYTES = 0xffff_ffff;

/** CRIU's own default ghost-file limit (1 MiB), the floor of Drover's "sized to the job". */
export const MIN_GHOST_LIMIT_BYTES = 1024 * 1024;

/**
 * The options, on the wire and in records. Absent means "the default" (the host's, else
 * Drover's: see {@link resolveCheckpointOptions}).
 */
export const CHECKPOINT_OPTIONS_SCHEMA = obj({
  /** Dump and restore file locks and leases (`--file-locks`). Default on. */
  fileLocks: opt(bool()),
  /** Open files whose name was removed but that have other links (`--link-remap`). Default on. */
  linkRemap: opt(bool()),
  /**
   * The largest unlinked open file carried in the images (`--ghost-limit`). Default: sized to
   * the job at each dump (its largest unlinked open or mapped file, at least 1 MiB).
   */
  ghostLimitBytes: opt(int({ min: 0, max: MAX_GHOST_LIMIT_BYTES })),
  /** Established TCP connections (`--tcp-established`). Default: on for a job with its own address. */
  tcpEstablished: opt(bool()),
  /** Drop connections still in flight instead of failing (`--skip-in-flight`). Default: as tcpEstablished. */
  skipInFlight: opt(bool()),
  /** Restore connected TCP sockets closed (`--tcp-close`): for jobs that reconnect. Default off. */
  tcpClose: opt(bool()),
  /** Restore sysctls the destination's kernel lacks as warnings (`--weak-sysctls`). Default off. */
  weakSysctls: opt(bool()),
  /** Reopen a device by another path when its own is missing (`--evasive-devices`). Default off. */
  evasiveDevices: opt(bool()),
});

/** What a job (or a host's configuration) asks for. */
export type CheckpointOptions = Infer<typeof CHECKPOINT_OPTIONS_SCHEMA>;

/** Every option resolved for one dump, and the restore of that dump. */
export interface EffectiveCheckpointOptions {
  fileLocks: boolean;
  linkRemap: boolean;
  ghostLimitBytes: number;
  tcpEstablished: boolean;
  skipInFlight: boolean;
  tcpClose: boolean;
  weakSysctls: boolean;
  evasiveDevices: boolean;
}

type Key = keyof EffectiveCheckpointOptions;

/** The text names (`--checkpoint-opt NAME[=VALUE]`, CRIU's own option names) and their keys. */
export const CHECKPOINT_OPTION_NAMES: Readonly<Record<string, Key>> = {
  'file-locks': 'fileLocks',
  'link-remap': 'linkRemap',
  'ghost-limit': 'ghostLimitBytes',
  'tcp-established': 'tcpEstablished',
  'skip-in-flight': 'skipInFlight',
  'tcp-close': 'tcpClose',
  'weak-sysctls': 'weakSysctls',
  'evasive-devices': 'evasiveDevices',
};

const NAME_OF = Object.fromEntries(
  Object.entries(CHECKPOINT_OPTION_NAMES).map(([n, k]) => [k, n]),
) as Record<Key, string>;

function bad(text: string, why: string): DroverError {
  return new DroverError(ErrorCode.InvalidArgument, `bad checkpoint option ${text}: ${why}`, {
    details: { option: text.slice(0, 200), known: Object.keys(CHECKPOINT_OPTION_NAMES) },
  });
}

/** `64M`, `1G`, `4096`, `512k` as bytes (binary units). */
export function parseSize(text: string): number | null {
  const m = /^(\d+)([kKmMgG]i?[bB]?|[bB])?$/.exec(text.trim());
  if (!m?.[1]) return null;
  const unit = (m[2] ?? '').charAt(0).toLowerCase();
  const mult = unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : 1;
  const n = Number(m[1]) * mult;
  return Number.isSafeInteger(n) ? n : null;
}

/**
 * Parse `--checkpoint-opt` values into options: `NAME` (on), `no-NAME` (off), `NAME=true|false`,
 * `ghost-limit=SIZE`. Several may be given, also comma-separated in one value. Unknown names and
 * bad values are INVALID_ARGUMENT, naming the known ones.
 */
export function parseCheckpointOptions(values: readonly string[]): CheckpointOptions {
  const out: Record<string, boolean | number> = {};
  for (const text of values.flatMap((v) => v.split(',')).map((v) => v.trim())) {
    if (text === '') continue;
    const eq = text.indexOf('=');
    let name = eq < 0 ? text : text.slice(0, eq);
    const value = eq < 0 ? undefined : text.slice(eq + 1);
    let negated = false;
    if (!(name in CHECKPOINT_OPTION_NAMES) && name.startsWith('no-')) {
      name = name.slice(3);
      negated = true;
    }
    const key = CHECKPOINT_OPTION_NAMES[name];
    if (key === undefined) {
      throw bad(
        text,
        `unknown; the options are ${Object.keys(CHECKPOINT_OPTION_NAMES).join(', ')}`,
      );
    }
    if (key === 'ghostLimitBytes') {
      const n = value === undefined || negated ? null : parseSize(value);
      if (n === null || n > MAX_GHOST_LIMIT_BYTES)
        throw bad(text, 'ghost-limit wants a size up to 4G, e.g. ghost-limit=64M');
      out[key] = n;
      continue;
    }
    if (value !== undefined && value !== 'true' && value !== 'false')
      throw bad(text, `${name} is on or off: ${name}, no-${name}, ${name}=true|false`);
    if (value !== undefined && negated) throw bad(text, `no-${name} takes no value`);
    out[key] = negated ? false : value !== 'false';
  }
  return CHECKPOINT_OPTIONS_SCHEMA.parse(out, 'checkpointOptions');
}

/** The text form of options, e.g. `file-locks no-link-remap ghost-limit=64M` (for display). */
export function formatCheckpointOptions(o: CheckpointOptions | EffectiveCheckpointOptions): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(o) as [Key, boolean | number | undefined][]) {
    if (value === undefined) continue;
    const name = NAME_OF[key];
    if (typeof value === 'number') parts.push(`${name}=${formatSize(value)}`);
    else parts.push(value ? name : `no-${name}`);
  }
  return parts.join(' ');
}

function formatSize(n: number): string {
  for (const [u, m] of [
    ['G', 1024 ** 3],
    ['M', 1024 ** 2],
    ['k', 1024],
  ] as const)
    if (n >= m && n % m === 0) return `${n / m}${u}`;
  return String(n);
}

/** What the defaults depend on, read from the job at the dump. */
export interface CheckpointFacts {
  /** The job has its own network namespace (its TCP connections can move). */
  ownNetwork: boolean;
  /** Allocated bytes of the job's largest unlinked open or mapped file (0: none). */
  largestGhostBytes: number;
}

/**
 * The options of one dump: the job's own choice, else its host's default, else Drover's default.
 * Drover's defaults are safe for every job: file locks and link-remap on; a ghost limit that
 * fits the job's largest unlinked file (rounded up to a MiB, at least CRIU's 1 MiB); TCP
 * connections and skip-in-flight for a job with its own address (docs/NETWORK.md); the rest off.
 */
export function resolveCheckpointOptions(
  job: CheckpointOptions | undefined,
  host: CheckpointOptions | undefined,
  facts: CheckpointFacts,
): EffectiveCheckpointOptions {
  const pick = <K extends Key>(k: K, dflt: EffectiveCheckpointOptions[K]) =>
    (job?.[k] ?? host?.[k] ?? dflt) as EffectiveCheckpointOptions[K];
  const mib = 1024 * 1024;
  const ghost = Math.min(
    MAX_GHOST_LIMIT_BYTES,
    Math.max(MIN_GHOST_LIMIT_BYTES, Math.ceil(facts.largestGhostBytes / mib) * mib),
  );
  const tcpEstablished = pick('tcpEstablished', facts.ownNetwork);
  return {
    fileLocks: pick('fileLocks', true),
    linkRemap: pick('linkRemap', true),
    ghostLimitBytes: pick('ghostLimitBytes', ghost),
    tcpEstablished,
    skipInFlight: pick('skipInFlight', tcpEstablished),
    tcpClose: pick('tcpClose', false),
    weakSysctls: pick('weakSysctls', false),
    evasiveDevices: pick('evasiveDevices', false),
  };
}
