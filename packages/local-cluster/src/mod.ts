/**
 * @drover/local-cluster: the local cluster that `drover up` / `drover down` manage, and what it
 * runs on: emulated hosts on one machine (namespaces, a bridge, NATS, sshd) with cleanup you can
 * trust, real agents and a controller started in them as processes. The test harness on top of
 * it is `@drover/testbed`.
 */
export { Testbed } from './testbed.js';
export type { TestbedOptions } from './testbed.js';
export { Host } from './host.js';
export type { HostContext, HostExecOptions, HostSpawnOptions } from './host.js';
export type { HostProcess, ProcessExit } from './host-process.js';
export { isAlive } from './proc.js';
export type { ExecResult, OwnedProcess } from './proc.js';
export { NATS_PORTS, NatsMode } from './nats.js';
export type { NatsOptions, NatsServer, NatsService } from './nats.js';
export { natsServerBin, SETUP_NATS_SERVER } from './nats-bin.js';
export type { NatsServerBin } from './nats-bin.js';
export type { SshdService } from './sshd.js';
export { leaks, assertNoLeftovers, removeRun, settleLeftovers, sweepLeftovers } from './cleanup.js';
export type { Leftover, SweepReport } from './cleanup.js';
export { TESTBED_PREFIX, DEFAULT_BASE_DIR } from './names.js';
export type { ProcessIdentity } from './names.js';
export { droverBin, DROVER_BINS } from './bins.js';
export type { DroverBin } from './bins.js';
export {
  AgentCluster,
  AgentHandle,
  AGENT_STATE_DIR,
  AGENT_STREAM_PORT,
  AGENT_METRICS_PORT,
  tlsFlags,
} from './agents.js';
export type { AgentOptions } from './agents.js';
export { ControllerProcess } from './controller.js';
export type { ControllerOptions } from './controller.js';
export { createTestbedCerts, TESTBED_IDENTITIES } from './security.js';
export type { TestbedCerts } from './security.js';
export { localUp, localDown, localHealth } from './local-cluster.js';
export type {
  LocalUpOptions,
  LocalUpResult,
  LocalHealth,
  LocalDownResult,
} from './local-cluster.js';
export {
  DEFAULT_LOCAL_DIR,
  LOCAL_STATE_FILE,
  localStatePath,
  readLocalState,
  localNatsUrl,
  localTls,
} from './local-state.js';
export type { LocalClusterState, LocalProcess } from './local-state.js';
