/** @drover/protocol: NATS names (subjects, streams, buckets), message schemas and validation, the Failure codec. No I/O. */
export * from './schema.js';
export * from './failure.js';
export * from './envelope.js';
export * from './names.js';
export * from './job-network.js';
export * from './checkpoint-options.js';
export * from './agent-api.js';
export * from './command.js';
export * from './signals.js';
export * from './image-contents.js';
export * from './migration-api.js';
export * from './controller-api.js';
export * from './identity.js';
export * from './roles.js';
export * from './paging.js';
