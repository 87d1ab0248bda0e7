/** Progress lines of a bench run, on stderr with the seconds since the run began. */

/** Writes one progress line. */
export type BenchLog = (message: string) => void;

/** A logger that prefixes each line with the elapsed time. */
export function benchLog(startedAt = performance.now()): BenchLog {
  return (message) =>
    process.stderr.write(
      `[${((performance.now() - startedAt) / 1000).toFixed(1).padStart(6)} s] ${message}\n`,
    );
}
