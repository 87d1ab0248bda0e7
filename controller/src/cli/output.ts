/** Human output for the CLI: aligned tables, sizes, a migration's per-phase timeline. */
import { table } from '@drover/cli-kit';
import type { MigrationRecord } from '@drover/protocol';

/** The CLI kit's, shared with drover-deploy. */
export { table };

/** A command line as a shell would take it back: empty and spaced arguments quoted. */
export function commandLine(argv: readonly string[]): string {
  return argv.map((a) => (a === '' || /[\s"'\\]/.test(a) ? JSON.stringify(a) : a)).join(' ');
}

/** Bytes as B/KiB/MiB/GiB. */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

/** What happens in each phase of a source's timeline, for the operator. */
function phaseNote(phase: string, m: MigrationRecord): string {
  const s = m.stats;
  switch (phase) {
    case 'preparing':
      return `preflight; ${m.destination} checks capacity and prepares`;
    case 'prepared':
      return m.mode === 'post-copy' ? `the stream to ${m.destination} opens` : 'freezing the job';
    case 'stream-open':
      return 'freezing the job';
    case 'quiesced':
      return 'the cgroup freezer and the network lock';
    case 'post-dump':
      return "the job's directory archived beside the images";
    case 'images-ready':
      return m.mode === 'post-copy' ? 'the images checked to hold no memory' : '';
    case 'dumping':
      return m.mode === 'post-copy'
        ? 'CRIU dumps all but the memory into tmpfs'
        : `CRIU dumps; its ${s.pages} pages go to ${m.destination}'s page server`;
    case 'transferring':
      return s.transferMs > 0
        ? `${bytes(s.bytes)} in ${s.files} files at ${bytes(Math.round((s.bytes * 1000) / s.transferMs))}/s`
        : `${bytes(s.bytes)} in ${s.files} files`;
    case 'awaiting':
      return `${m.destination} restores the job`;
    case 'pulling-pages':
      return `the job runs on ${m.destination}, which pulls its memory pages`;
    case 'committing':
      return 'the frozen original is discarded';
    default:
      return '';
  }
}

/**
 * A migration's phases (when each started, how long it took, what happened in it) and its
 * figures: downtime, the time of each step, bytes, files and pages.
 */
export function timeline(m: MigrationRecord): string {
  const rows = m.timeline.map((t, i) => {
    const next = m.timeline[i + 1];
    return [
      t.phase,
      `${t.atMs} ms`,
      next ? `${next.atMs - t.atMs} ms` : '',
      next ? phaseNote(t.phase, m) : '',
    ];
  });
  const s = m.stats;
  return [
    table(['phase', 'at', 'took', ''], rows),
    `frozen (downtime) ${s.frozenMs} ms · dump ${s.dumpMs} ms · transfer ${s.transferMs} ms · ` +
      `restore ${s.restoreMs} ms · total ${s.totalMs} ms · ${bytes(s.bytes)} in ${s.files} files · ` +
      `${s.pages} pages · ${m.mode}`,
  ].join('\n');
}

/** A failure as a wire `Failure` or an operation's error: code, message, causes, rollback errors. */
export interface FailureLike {
  code: string;
  message: string;
  details?: Record<string, unknown>;
  cause?: FailureLike;
  suppressed?: FailureLike[];
}

/**
 * Why something failed, in full: the error, what caused it, what went wrong while rolling back,
 * and the lines of CRIU's log that say why (from whichever of them carries them).
 */
export function failureReport(f: FailureLike): string {
  const lines = [`error: ${f.code}: ${f.message}`];
  const walk = (x: FailureLike, indent: string): void => {
    if (x.cause) {
      lines.push(`${indent}caused by ${x.cause.code}: ${x.cause.message}`);
      walk(x.cause, `${indent}  `);
    }
    for (const s of x.suppressed ?? []) {
      lines.push(`${indent}while rolling back: ${s.code}: ${s.message}`);
      walk(s, `${indent}  `);
    }
  };
  walk(f, '  ');
  const criu = criuLog(f);
  if (criu) {
    lines.push(`CRIU's log${criu.path ? ` (${criu.path})` : ''}:`);
    for (const l of criu.tail.slice(-20)) lines.push(`  ${l}`);
  }
  return lines.join('\n');
}

/** The first CRIU log tail in a failure, its causes or its rollback errors. */
function criuLog(f: FailureLike, depth = 0): { path: string | null; tail: string[] } | null {
  const d = f.details ?? {};
  if (Array.isArray(d['logTail']) && d['logTail'].length > 0) {
    return {
      path: typeof d['logPath'] === 'string' ? d['logPath'] : null,
      tail: (d['logTail'] as unknown[]).map(String),
    };
  }
  if (depth > 6) return null;
  for (const next of [f.cause, ...(f.suppressed ?? [])]) {
    const found = next ? criuLog(next, depth + 1) : null;
    if (found) return found;
  }
  return null;
}
