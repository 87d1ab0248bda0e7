/** `drover audit [--caller NAME] [--op OP] [--since SEQ] [--limit N]`: who asked for what. */
import type { CommandModule } from 'yargs';
import type { AuditEntry } from '@drover/protocol';
import { callController, type GlobalArgs } from '../context.js';
import { table } from '../output.js';

type Args = GlobalArgs & {
  caller: string | undefined;
  op: string | undefined;
  since: number | undefined;
  limit: number | undefined;
};

export const auditCommand: CommandModule<GlobalArgs, Args> = {
  command: 'audit',
  describe: 'Show the audit stream: who asked for each change, and the outcome, oldest first',
  builder: (y) =>
    y
      .option('caller', { type: 'string', describe: 'only requests by this identity name' })
      .option('op', { type: 'string', describe: 'only this operation (run, migrate, drain, ...)' })
      .option('since', { type: 'number', describe: 'only records after this sequence number' })
      .option('limit', { type: 'number', describe: 'at most this many (default 100)' }),
  handler: async (argv) => {
    await callController(
      argv,
      'audit',
      {
        ...(argv.caller ? { caller: argv.caller } : {}),
        ...(argv.op ? { op: argv.op } : {}),
        ...(argv.since !== undefined ? { sinceSeq: argv.since } : {}),
        ...(argv.limit !== undefined ? { limit: argv.limit } : {}),
      },
      (r) =>
        table(
          ['SEQ', 'TIME', 'CALLER', 'OP', 'PHASE', 'DETAIL'],
          r.entries.map(({ seq, time, entry }) => [
            String(seq),
            time,
            `${entry.caller.role}/${entry.caller.name}${entry.caller.verified ? '' : ' (unverified)'}`,
            entry.op,
            entry.phase === 'asked' ? 'asked' : (entry.outcome ?? ''),
            detail(entry),
          ]),
        ),
    );
  },
};

/** One line about a record: the request asked, or what came of it. */
function detail(e: AuditEntry): string {
  if (e.phase === 'asked') {
    const s = JSON.stringify(e.request ?? {});
    return s.length > 100 ? `${s.slice(0, 97)}...` : s;
  }
  return [e.resultId, e.message, e.durationMs !== undefined ? `${e.durationMs} ms` : undefined]
    .filter((x) => x !== undefined && x !== '')
    .join('  ');
}
