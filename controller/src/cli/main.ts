#!/usr/bin/env node
/** `drover`: the operator's CLI, a thin client of the controller. Exit codes: exit-codes.ts. */
import { readFileSync } from 'node:fs';
import { isDroverError } from '@drover/common';
import { isUsageError, runCli } from '@drover/cli-kit';
import { errorToFailure } from '@drover/protocol';
import { adviceFor, exitCodes } from './exit-codes.js';
import { failureReport } from './output.js';
import { clusterDefaults, type ClusterDefaults } from './cluster-context.js';
import type { GlobalArgs } from './context.js';
import { contextCommand } from './commands/context.js';
import { certsCommand } from './commands/certs.js';
import { adoptCommand } from './commands/adopt.js';
import { attachCommand } from './commands/attach.js';
import { checkpointCommand } from './commands/checkpoint.js';
import { consoleCommand } from './commands/console.js';
import { cordonCommand, uncordonCommand } from './commands/cordon.js';
import { deployCommand } from './commands/deploy.js';
import { demoCommand } from './commands/demo.js';
import { downCommand } from './commands/down.js';
import { auditCommand } from './commands/audit.js';
import { eventsCommand } from './commands/events.js';
import { drainCommand } from './commands/drain.js';
import { hostsCommand } from './commands/hosts.js';
import { imagesCommand } from './commands/images.js';
import {
  inspectCommand,
  logsCommand,
  preflightCommand,
  signalCommand,
  stopCommand,
} from './commands/job-ops.js';
import { jobsCommand } from './commands/jobs.js';
import { migrateCommand } from './commands/migrate.js';
import { opsCommand, statusCommand } from './commands/ops.js';
import { resolveCommand } from './commands/resolve.js';
import { restoreCommand } from './commands/restore.js';
import { runCommand } from './commands/run.js';
import { upCommand } from './commands/up.js';

/** This CLI's version: its package's (dist/cli/main.js → the package's package.json). */
function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version?: string;
  };
  return pkg.version ?? 'unknown';
}

await runCli({
  name: 'drover',
  usage: '$0 <command> [options]',
  exitCodes,
  version: version(),
  explain: (err) =>
    // What caused it and what failed while rolling back: never dropped.
    isDroverError(err) && (err.cause !== undefined || err.suppressed.length > 0)
      ? failureReport(errorToFailure(err)).split('\n').slice(1)
      : [],
  advice: (err) => (isUsageError(err) ? 'see drover --help' : adviceFor(err)),
  build: (y) => {
    // Which cluster, when no flag says: a context, the environment, the local cluster (an
    // unknown --context fails here, inside the runner, with its exit code).
    const dflt: ClusterDefaults = clusterDefaults(process.argv.slice(2));
    return y
      .option('context', {
        type: 'string',
        describe:
          'the cluster to talk to, a context of the contexts file (DROVER_CONTEXT; default: ' +
          'the current context; see `drover context ls`); --nats and --nats-* override it',
      })
      .option('nats', {
        type: 'string',
        default: dflt.nats,
        describe:
          'NATS server(s), comma-separated (default: the context named by --context or ' +
          'DROVER_CONTEXT, else DROVER_NATS_SERVERS, else the current context, else the local ' +
          'cluster of `drover up`, else nats://127.0.0.1:4222)',
      })
      .option('nats-ca', {
        type: 'string',
        default: dflt.ca,
        describe: 'TLS: the cluster CA (DROVER_NATS_CA; default: the local cluster of `drover up`)',
      })
      .option('nats-cert', {
        type: 'string',
        default: dflt.cert,
        describe: "TLS: this client's certificate, an operator's or a viewer's (DROVER_NATS_CERT)",
      })
      .option('nats-key', {
        type: 'string',
        default: dflt.key,
        describe: "TLS: that certificate's key (DROVER_NATS_KEY)",
      })
      .option('json', { type: 'boolean', default: false, describe: 'print JSON' })
      .option('timeout', {
        type: 'number',
        default: 900,
        describe: 'seconds to wait for the controller',
      })
      .command(upCommand)
      .command(downCommand)
      .command(demoCommand)
      .command(hostsCommand)
      .command(jobsCommand)
      .command(runCommand)
      .command(inspectCommand)
      .command(resolveCommand)
      .command(logsCommand)
      .command(attachCommand)
      .command(signalCommand)
      .command(stopCommand)
      .command(migrateCommand)
      .command(cordonCommand)
      .command(uncordonCommand)
      .command(drainCommand)
      .command(preflightCommand)
      .command(opsCommand)
      .command(statusCommand)
      .command(eventsCommand)
      .command(auditCommand)
      .command(adoptCommand)
      .command(checkpointCommand)
      .command(restoreCommand)
      .command(imagesCommand)
      .command(deployCommand)
      .command(certsCommand)
      .command(consoleCommand)
      .command(contextCommand)
      .parserConfiguration({ 'populate--': true })
      .completion('completion', 'print a shell completion script');
  },
});

export type { GlobalArgs };
