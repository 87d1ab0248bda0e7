/** @drover/test testbed: emulated multi-host networks with NATS and sshd, and cleanup you can trust. */
export { Testbed } from './testbed.js';
export type { TestbedOptions } from './testbed.js';
export { Host } from './host.js';
export type {
  HostContext,
  HostExecOptions,
  HostSpawnOptions,
  HostProcess,
  ProcessExit,
} from './host.js';
export type { ExecResult } from './proc.js';
export { NatsMode, jetStreamAnswers } from './nats.js';
export type { NatsServer, NatsService } from './nats.js';
export type { SshdService } from './sshd.js';
export { leaks, assertNoLeftovers, sweepLeftovers } from './cleanup.js';
export type { Leftover, SweepReport } from './cleanup.js';
export { withTestbed, collectLogs, settleLeftovers, TestbedError } from './harness.js';
export type { HarnessOptions } from './harness.js';
export { TESTBED_PREFIX, DEFAULT_BASE_DIR } from './names.js';
