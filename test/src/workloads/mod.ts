/** Self-checking workloads for suites and benchmarks: the catalog, command lines, and the contract client. */
export {
  WORKLOADS,
  WORKLOAD_NAMES,
  WORKLOADS_DIR,
  INTERPRETERS,
  workloadCommand,
  workloadEnv,
} from './catalog.js';
export type { Interpreter, WorkloadName, WorkloadOption, WorkloadOptions } from './catalog.js';
export { waitReady, requestVerdict, requestCorruption, readHeartbeats } from './contract.js';
export type { Ready, Verdict, Heartbeat, HeartbeatSummary, SignalTarget } from './contract.js';
export {
  RedisConnection,
  datasetDigest,
  expectedDigest,
  loadDataset,
  redisWriter,
  httpHammer,
  PairServer,
} from './clients.js';
export type { ClientReport, Resp } from './clients.js';
