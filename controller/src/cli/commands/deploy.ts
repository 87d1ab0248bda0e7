/**
 * `drover deploy <verb> ...`: the SSH deployer's verbs from the main CLI. A thin pass-through: it
 * runs the `drover-deploy` bin with the same arguments and exits with its code, so the CLI never
 * imports the deployer (no app imports another app) and both front ends behave the same.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { CommandModule } from 'yargs';
import { ChildExited } from '@drover/cli-kit';
import type { GlobalArgs } from '../context.js';

/**
 * Where `drover-deploy` is: `DROVER_DEPLOY_BIN`, else the deployer built next to this CLI in the
 * same checkout or install (controller/dist/cli/commands → deploy/dist/main.js), else the PATH.
 */
export function deployBin(env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.DROVER_DEPLOY_BIN) return [env.DROVER_DEPLOY_BIN];
  const sibling = fileURLToPath(new URL('../../../../deploy/dist/main.js', import.meta.url));
  if (existsSync(sibling)) return [process.execPath, sibling];
  return ['drover-deploy'];
}

/** The arguments after the `deploy` word, plus `--json` when it was given before it. */
export function deployArgs(raw: readonly string[], json: boolean): string[] {
  const i = raw.indexOf('deploy');
  const rest = i >= 0 ? raw.slice(i + 1) : [];
  return json && !rest.includes('--json') ? ['--json', ...rest] : rest;
}

export const deployCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'deploy',
  describe:
    'Deploy agents over SSH: check, certs, install, start, stop, status, upgrade, uninstall (drover-deploy)',
  // Everything after `deploy` belongs to drover-deploy, `--help` included.
  builder: (y) => y.strict(false).help(false).version(false),
  handler: async (argv) => {
    const [cmd, ...pre] = deployBin();
    const args = [...pre, ...deployArgs(process.argv.slice(2), argv.json)];
    const code = await new Promise<number>((resolve, reject) => {
      const child = spawn(cmd as string, args, { stdio: 'inherit' });
      child.once('error', reject);
      child.once('exit', (c, signal) => resolve(c ?? (signal ? 128 + 1 : 1)));
    });
    if (code !== 0) throw new ChildExited('drover-deploy', code);
  },
};
