#!/usr/bin/env node
/** `drover-controller`: compile the config (defaults < file < env < flags) and run the daemon. */
import { parseArgs } from 'node:util';
import { isDroverError, jsonLogger } from '@drover/common';
import {
  compileControllerConfig,
  controllerConfigFromEnv,
  controllerConfigFromFile,
  type ControllerConfigInput,
} from './config.js';
import { startController } from './daemon.js';
import { CONTROLLER_USAGE } from './usage.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      config: { type: 'string', short: 'c' },
      id: { type: 'string' },
      nats: { type: 'string' },
      'nats-ca': { type: 'string' },
      'nats-cert': { type: 'string' },
      'nats-key': { type: 'string' },
      'unreachable-ms': { type: 'string' },
      'lease-ms': { type: 'string' },
      replicas: { type: 'string' },
      'image-retention': { type: 'string' },
      'dumps-per-host': { type: 'string' },
      'audit-retention-days': { type: 'string' },
      'log-level': { type: 'string' },
      'metrics-addr': { type: 'string' },
      'job-subnet': { type: 'string' },
      'job-gateway': { type: 'string' },
      'job-range': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(CONTROLLER_USAGE);
    return;
  }
  const flags: ControllerConfigInput = {
    ...(values.id ? { id: values.id } : {}),
    ...(values.nats || values['nats-ca'] || values['nats-cert'] || values['nats-key']
      ? {
          nats: {
            ...(values.nats ? { servers: values.nats } : {}),
            ...(values['nats-ca'] || values['nats-cert'] || values['nats-key']
              ? {
                  tls: {
                    ...(values['nats-ca'] ? { caFile: values['nats-ca'] } : {}),
                    ...(values['nats-cert'] ? { certFile: values['nats-cert'] } : {}),
                    ...(values['nats-key'] ? { keyFile: values['nats-key'] } : {}),
                  },
                }
              : {}),
          },
        }
      : {}),
    ...(values['unreachable-ms'] ? { unreachableAfterMs: Number(values['unreachable-ms']) } : {}),
    ...(values['lease-ms'] ? { leaseTtlMs: Number(values['lease-ms']) } : {}),
    ...(values.replicas ? { replicas: Number(values.replicas) } : {}),
    ...(values['image-retention'] ? { imageRetention: Number(values['image-retention']) } : {}),
    ...(values['dumps-per-host'] ? { dumpsPerHost: Number(values['dumps-per-host']) } : {}),
    ...(values['audit-retention-days']
      ? { auditRetentionDays: Number(values['audit-retention-days']) }
      : {}),
    ...(values['log-level'] ? { logLevel: values['log-level'] as 'info' } : {}),
    ...(values['metrics-addr'] ? { metricsAddr: values['metrics-addr'] } : {}),
    ...(values['job-subnet'] || values['job-gateway'] || values['job-range']
      ? {
          jobNetwork: {
            ...(values['job-subnet'] ? { subnet: values['job-subnet'] } : {}),
            ...(values['job-gateway'] ? { gateway: values['job-gateway'] } : {}),
            ...(values['job-range'] ? { range: values['job-range'] } : {}),
          },
        }
      : {}),
  };
  const config = compileControllerConfig(
    values.config ? controllerConfigFromFile(values.config) : {},
    controllerConfigFromEnv(process.env),
    flags,
  );
  const log = jsonLogger((l) => process.stderr.write(l), { level: config.logLevel });
  // A controller that lost its lease must stop acting at once; its supervisor restarts it.
  const daemon = await startController(config, log, () => process.exit(3));
  const stop = (): void => void daemon.close().finally(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`drover-controller: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(isDroverError(err) && err.code === 'INVALID_ARGUMENT' ? 2 : 1);
});
