/**
 * `drover console [--listen HOST:PORT] [--actions]`: the web console, served from this machine
 * with this CLI's NATS identity (its certificate), until Ctrl-C. Prints the address to open:
 * it carries a login token (see @drover/console for how a browser gets in). Read-only unless
 * `--actions`, which an operator's certificate needs.
 */
import type { CommandModule } from 'yargs';
import { Bus } from '@drover/bus';
import { jsonLogger } from '@drover/common';
import { startConsole } from '@drover/console';
import { tlsOf, type GlobalArgs } from '../context.js';

type Args = GlobalArgs & { listen: string; actions: boolean };

export const consoleCommand: CommandModule<GlobalArgs, Args> = {
  command: 'console',
  describe: 'Serve the web console (hosts, jobs, live operations, image sets, audit) until Ctrl-C',
  builder: (y) =>
    y
      .option('listen', {
        type: 'string',
        default: '127.0.0.1:7777',
        describe: 'HOST:PORT to serve on (port 0: any free one); from elsewhere use ssh -L',
      })
      .option('actions', {
        type: 'boolean',
        default: false,
        describe:
          'allow migrate, drain, cordon and checkpoint from the page (an operator certificate)',
      }),
  handler: async (argv) => {
    const tls = tlsOf(argv);
    const log = jsonLogger((l) => process.stderr.write(l), { level: 'warn' });
    const bus = await Bus.connect({
      servers: argv.nats.split(','),
      name: 'drover-console',
      requestTimeoutMs: 30_000,
      logger: log,
      ...(tls ? { tls } : {}),
    });
    let running;
    try {
      running = await startConsole({
        bus,
        listen: argv.listen,
        actions: argv.actions,
        logger: log,
      });
    } catch (err) {
      await bus.close();
      throw err;
    }
    const who = running.identity
      ? `${running.identity.role} ${running.identity.name}`
      : 'no certificate (NATS without TLS)';
    process.stdout.write(
      argv.json
        ? JSON.stringify({
            url: running.url,
            loginUrl: running.loginUrl,
            identity: running.identity,
            actions: argv.actions,
          }) + '\n'
        : `drover console: open ${running.loginUrl}\n` +
            `  as ${who}, ${argv.actions ? 'actions allowed' : 'read-only'}; Ctrl-C stops it\n`,
    );
    await new Promise<void>((resolve) => {
      const stop = (): void => resolve();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    await running.close();
    await bus.close();
  },
};
