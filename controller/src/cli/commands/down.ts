/** `drover down [--dir D]`: remove the local cluster `drover up` started, completely. */
import type { CommandModule } from 'yargs';
import { defaultLocalDir, type GlobalArgs } from '../context.js';
import { dropLocalContext, localContextName } from '../cluster-context.js';
import { dirOption, type LocalArgs } from './up.js';

export const downCommand: CommandModule<GlobalArgs, LocalArgs> = {
  command: 'down',
  describe:
    'Remove the local cluster: every process, namespace, mount, cgroup and file (also after a ' +
    'failed up; nothing to do is fine)',
  builder: (y) => y.option('dir', dirOption),
  handler: async (argv) => {
    const { localDown } = await import('@drover/local-cluster');
    const r = await localDown(argv.dir);
    dropLocalContext(localContextName(argv.dir, defaultLocalDir({})));
    process.stdout.write(
      argv.json
        ? JSON.stringify({ dir: argv.dir, ...r }, null, 2) + '\n'
        : r.removed.length === 0
          ? `no local cluster in ${argv.dir}; nothing to do\n`
          : `local cluster ${r.removed.join(', ')} removed (${r.killed.length} process(es) ` +
            `killed); nothing of it is left\n`,
    );
  },
};
