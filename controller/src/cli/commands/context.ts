/**
 * `drover context ls|use|show|rm`: the clusters this CLI knows (the contexts file, which
 * `drover-deploy install` writes), and which one commands talk to by default.
 */
import type { Argv, CommandModule } from 'yargs';
import { findContext, removeContext, useContext, type ClusterContext } from '@drover/common';
import { contextsFileOf, readContextsFile, writeContextsFile } from '@drover/cli-kit';
import type { GlobalArgs } from '../context.js';
import { table } from '../output.js';

type Args = GlobalArgs & { context?: string | undefined };
type Named = Args & { name: string };

function print(argv: GlobalArgs, value: unknown, human: string): void {
  process.stdout.write(argv.json ? JSON.stringify(value, null, 2) + '\n' : human + '\n');
}

function describeOne(c: ClusterContext, current: boolean): string {
  return [
    `context  ${c.name}${current ? ' (current)' : ''}`,
    `nats     ${c.nats.join(',')}`,
    `ca       ${c.caFile ?? '-'}`,
    `cert     ${c.certFile ?? '-'}`,
    `key      ${c.keyFile ?? '-'}`,
    ...(c.source ? [`source   ${c.source}`] : []),
  ].join('\n');
}

const named = (y: Argv<Args>) => y.positional('name', { type: 'string', demandOption: true });

export const contextCommand: CommandModule<GlobalArgs, Args> = {
  command: 'context <command>',
  describe: 'The clusters this CLI knows (~/.config/drover/contexts.json, $DROVER_CONFIG)',
  builder: (y) =>
    (y as Argv<Args>)
      .command({
        command: 'ls',
        describe: 'List the contexts; * marks the current one',
        builder: (y: Argv<Args>) => y,
        handler: (argv: Args) => {
          const path = contextsFileOf();
          const f = readContextsFile(path);
          print(
            argv,
            { file: path, ...f },
            f.contexts.length === 0
              ? `no contexts in ${path} (drover-deploy install writes one)`
              : table(
                  ['', 'NAME', 'NATS', 'CERT'],
                  f.contexts.map((c) => [
                    c.name === f.current ? '*' : '',
                    c.name,
                    c.nats.join(','),
                    c.certFile ?? '-',
                  ]),
                ),
          );
        },
      })
      .command({
        command: 'use <name>',
        describe: 'Make a context the current one',
        builder: named,
        handler: (argv: Named) => {
          const path = contextsFileOf();
          writeContextsFile(path, useContext(readContextsFile(path), argv.name));
          print(argv, { current: argv.name }, `current context: ${argv.name}`);
        },
      })
      .command({
        command: 'show [name]',
        describe: 'A context (default: the one commands use now)',
        builder: (y: Argv<Args>) => y.positional('name', { type: 'string' }),
        handler: (argv: Args & { name?: string | undefined }) => {
          const f = readContextsFile(contextsFileOf());
          const name = argv.name || argv.context || process.env.DROVER_CONTEXT || f.current;
          if (!name)
            throw Object.assign(new Error('no current context: name one'), { usage: true });
          const c = findContext(f, name);
          print(
            argv,
            { ...c, current: c.name === f.current },
            describeOne(c, c.name === f.current),
          );
        },
      })
      .command({
        command: 'rm <name>',
        describe: 'Forget a context (its certificate files stay)',
        builder: named,
        handler: (argv: Named) => {
          const path = contextsFileOf();
          writeContextsFile(path, removeContext(readContextsFile(path), argv.name));
          print(argv, { removed: argv.name }, `removed context ${argv.name}`);
        },
      })
      .demandCommand(1, 'name a context command: ls, use, show or rm'),
  handler: () => {},
};
