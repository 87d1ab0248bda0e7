/**
 * @drover/cli-kit: what Drover's two CLIs (`drover`, `drover-deploy`) share — the yargs runner
 * with its failure tail, exit codes from one table per CLI (handlers throw typed errors, never
 * set numbers), aligned tables, and the contexts file on disk.
 */
export { runCli } from './run.js';
export type { CliSpec } from './run.js';
export {
  ChildExited,
  exitCodeOf,
  isShown,
  isUsageError,
  ShownFailure,
  UsageError,
} from './exit-codes.js';
export type { ExitCodeTable } from './exit-codes.js';
export { table } from './table.js';
export {
  contextsFileOf,
  readContextsFile,
  saveContext,
  writeContextsFile,
} from './contexts-file.js';
