/** @drover/bus: the only package that imports @nats-io: connection, request/reply, the agent API. */
export { Bus } from './connection.js';
export type { BusOptions, RawHandler } from './connection.js';
export { serveAgentApi, AgentClient } from './agent-rpc.js';
export type { AgentHandlers } from './agent-rpc.js';
