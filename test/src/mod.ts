/** @drover/test: the self-checking workloads and the suites (the testbed is @drover/testbed). */
export * from './workloads/mod.js';
export { REPO_ROOT, CLI_MAIN, drover, droverCli } from './cluster/cli.js';
export type { CliResult, CliOptions } from './cluster/cli.js';
