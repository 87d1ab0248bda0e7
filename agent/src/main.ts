#!/usr/bin/env node
/** `drover-agent`: compile the config (defaults < file < env < flags) and run the daemon. */
import { jsonLogger, isDroverError } from '@drover/common';
import { compileAgentConfig, configFromArgs, configFromEnv, configFromFile } from './config.js';
import { profileOnSignal } from './cpu-profile.js';
import { startAgentDaemon } from './daemon.js';
import { AGENT_USAGE } from './usage.js';

async function main(): Promise<void> {
  const args = configFromArgs(process.argv.slice(2));
  if (args.help) {
    process.stdout.write(AGENT_USAGE);
    return;
  }
  const config = compileAgentConfig(
    args.file ? configFromFile(args.file) : {},
    configFromEnv(process.env),
    args.input,
  );
  const log = jsonLogger((l) => process.stderr.write(l), { level: config.logLevel });
  profileOnSignal(process.env.DROVER_CPU_PROFILE_DIR, log);
  const daemon = await startAgentDaemon(config, log);
  const stop = (sig: string): void => {
    log.info('stopping; jobs keep running', { signal: sig });
    void daemon.close().finally(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  const msg = err instanceof Error ? err.message : String(err);
  process.stderr.write(`drover-agent: ${msg}\n`);
  process.exit(isDroverError(err) && err.code === 'INVALID_ARGUMENT' ? 2 : 1);
});
