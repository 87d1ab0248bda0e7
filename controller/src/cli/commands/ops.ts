/** `drover ops` and `drover status OP`: operations the controller ran. */
import type { CommandModule } from 'yargs';
import { callController, type GlobalArgs } from '../context.js';
import { failureReport, table, timeline } from '../output.js';
import { clusterReport } from '../cluster-report.js';

export const opsCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'ops',
  describe: 'List recent operations',
  handler: async (argv) => {
    await callController(argv, 'ops', {}, (r) =>
      table(
        ['OP', 'KIND', 'STATE', 'CREATED', 'OF'],
        r.ops.map((o) => [
          o.opId,
          o.kind,
          o.state,
          o.createdAt,
          String(o.request['jobId'] ?? o.host ?? o.imageSet ?? ''),
        ]),
      ),
    );
  },
};

export const statusCommand: CommandModule<GlobalArgs, GlobalArgs & { op: string }> = {
  command: 'status <op>',
  describe: 'Show one operation',
  builder: (y) => y.positional('op', { type: 'string', demandOption: true }),
  handler: async (argv) => {
    await callController(argv, 'status', { opId: argv.op }, (o) =>
      [
        o.kind === 'checkpoint' || o.kind === 'restore'
          ? clusterReport(o)
          : `${o.opId} ${o.kind}: ${o.state}${o.error ? ` (${o.error.message})` : ''}`,
        o.kind === 'migrate' && o.migration ? timeline(o.migration) : '',
        o.kind === 'drain'
          ? table(
              ['JOB', 'NAME', 'OUTCOME', 'TO', 'WHY'],
              (o.items ?? []).map((i) => [
                i.jobId,
                i.name,
                i.state,
                i.destination ?? '-',
                i.reason ?? '',
              ]),
            )
          : '',
        // Why it failed, in full: causes, errors while rolling back, CRIU's lines.
        o.error ? failureReport(o.error) : '',
      ]
        .filter((l) => l !== '')
        .join('\n'),
    );
  },
};
