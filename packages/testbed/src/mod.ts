/**
 * @drover/testbed: the test harness. `withTestbed` runs a suite body against a fresh run of
 * emulated hosts and always tears it down (logs kept on failure, leftovers a failure). The hosts,
 * services, agents and controller themselves live in `@drover/local-cluster` (the local cluster
 * of `drover up` runs on them); they are re-exported here so suites import one package.
 */
export * from '@drover/local-cluster';
export { withTestbed, collectLogs, TestbedError } from './harness.js';
export type { HarnessOptions } from './harness.js';
