/** @drover/bus: the only package that imports @nats-io: connection, request/reply, the agent API. */
export { Bus, busOptionsFrom, NatsSettingsInput } from './connection.js';
export type { BusOptions, NatsSettings, RawHandler } from './connection.js';
export { jetStreamAnswers } from './health.js';
export { serveAgentApi, AgentClient } from './agent-rpc.js';
export type { AgentHandlers } from './agent-rpc.js';
export { StateStore, validateKey } from './state-store.js';
export type { StateStoreOptions, Versioned, MutateOptions, WatchOptions } from './state-store.js';
export { Lease, LeaseKeeper } from './lease.js';
export type { LeaseRecord, LeaseOptions, LeaseKeeperOptions } from './lease.js';
export { EventLog } from './event-log.js';
export type { EventLogOptions, ReadOptions, LoggedEvent } from './event-log.js';
export { serveControllerApi, ControllerClient } from './controller-rpc.js';
export { callAllPages } from './controller-pages.js';
export type { ControllerAudit, ControllerHandlers } from './controller-rpc.js';
export { ObjectFiles } from './object-files.js';
export type { ObjectFilesOptions, StoredObject } from './object-files.js';
export {
  NATS_SERVER_MIN,
  parseServerVersion,
  serverVersionAtLeast,
  serverVersionOf,
  serverVersionProblem,
} from './server-version.js';
