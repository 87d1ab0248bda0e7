/** @drover/certs: the cluster CA, certificates for Drover's identities, their revocation, and the NATS security config. */
export * from './nats-config.js';
export * from './issue.js';
export * from './nats-files.js';
export * from './init-cluster.js';
export * from './revocation.js';
