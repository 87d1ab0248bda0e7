/** `drover events [--host H] [--since SEQ] [--limit N]`: the cluster's history. */
import type { CommandModule } from 'yargs';
import { callController, type GlobalArgs } from '../context.js';
import { table } from '../output.js';

type Args = GlobalArgs & {
  host: string | undefined;
  since: number | undefined;
  limit: number | undefined;
};

export const eventsCommand: CommandModule<GlobalArgs, Args> = {
  command: 'events',
  describe: 'Show cluster events (job states, migration phases), oldest first',
  builder: (y) =>
    y
      .option('host', { type: 'string' })
      .option('since', { type: 'number', describe: 'only events after this sequence number' })
      .option('limit', { type: 'number', describe: 'at most this many (default 100)' }),
  handler: async (argv) => {
    await callController(
      argv,
      'events',
      {
        ...(argv.host ? { host: argv.host } : {}),
        ...(argv.since !== undefined ? { sinceSeq: argv.since } : {}),
        ...(argv.limit !== undefined ? { limit: argv.limit } : {}),
      },
      (r) =>
        table(
          ['SEQ', 'TIME', 'SUBJECT', 'EVENT'],
          r.events.map((e) => {
            const v = e.value as Record<string, unknown>;
            const what = [v['jobId'], v['state'] ?? v['phase'], v['migrationId']]
              .filter(Boolean)
              .join(' ');
            return [String(e.seq), e.time, e.subject, what];
          }),
        ),
    );
  },
};
