/** @drover/certs: the cluster CA, certificates for Drover's identities, and the NATS security config. */
export * from './nats-config.js';
export * from './pki.js';
