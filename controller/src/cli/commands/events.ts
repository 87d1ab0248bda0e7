/**
 * `drover events [--host H] [--limit N] [--since SEQ] [-f] [--raw]`: the cluster's history, newest
 * last. By default the last N events counting back from now; `--since` reads on from a sequence
 * number; `-f` then prints new events as they come. A migration's run of progress ticks shows as
 * one line (`--raw`: every tick).
 */
import type { CommandModule } from 'yargs';
import type { ClusterEvent, ControllerRequest } from '@drover/protocol';
import { validateRequest, withController, type Ask, type GlobalArgs } from '../context.js';
import { bytes } from '../output.js';

type Args = GlobalArgs & {
  host: string | undefined;
  since: number | undefined;
  limit: number;
  follow: boolean;
  raw: boolean;
};

const FOLLOW_POLL_MS = 1000;

/** One event's columns: sequence, time, host, kind, and what happened. */
export function eventRow(e: ClusterEvent): string[] {
  const [, , host = '', kind = ''] = e.subject.split('.');
  const v = (e.value ?? {}) as Record<string, unknown>;
  const what: string[] = [];
  for (const k of ['jobId', 'state', 'phase']) if (typeof v[k] === 'string') what.push(v[k]);
  if (typeof v['destination'] === 'string') what.push(`→ ${v['destination']}`);
  if (typeof v['exitCode'] === 'number') what.push(`exit ${v['exitCode']}`);
  if (typeof v['signal'] === 'string') what.push(`by ${v['signal']}`);
  if (
    (v['phase'] === 'transferring' || v['phase'] === 'dumping') &&
    typeof v['bytes'] === 'number'
  ) {
    const total = typeof v['totalBytes'] === 'number' ? v['totalBytes'] : 0;
    what.push(`${bytes(v['bytes'])}${total ? ` of ${bytes(total)}` : ''}`);
  }
  if (e.folded) what.push(`(${e.folded} progress updates)`);
  if (typeof v['migrationId'] === 'string') what.push(v['migrationId']);
  return [String(e.seq), e.time, host, kind, what.join(' ')];
}

const HEADERS = ['SEQ', 'TIME', 'HOST', 'KIND', 'EVENT'];

export const eventsCommand: CommandModule<GlobalArgs, Args> = {
  command: 'events',
  describe: 'Show cluster events (job states, migration phases), newest last; -f follows',
  builder: (y) =>
    y
      .option('host', { type: 'string', describe: "only this host's events" })
      .option('limit', {
        type: 'number',
        default: 100,
        describe: 'the last N events, counting back from now (with --since: the first N after it)',
      })
      .option('since', { type: 'number', describe: 'the events after this sequence number' })
      .option('follow', {
        alias: 'f',
        type: 'boolean',
        default: false,
        describe: 'then print new events as they happen (Ctrl-C to stop)',
      })
      .option('raw', {
        type: 'boolean',
        default: false,
        describe:
          "every progress tick on its own line (default: a migration's run of ticks is one)",
      }),
  handler: async (argv) => {
    const base: ControllerRequest<'events'> = {
      limit: argv.limit,
      ...(argv.host ? { host: argv.host } : {}),
      ...(argv.raw ? {} : { fold: true }),
    };
    const first = validateRequest(
      'events',
      argv.since !== undefined ? { ...base, sinceSeq: argv.since } : { ...base, newest: true },
      { limit: '--limit', sinceSeq: '--since', host: '--host' },
    );
    await withController(argv, async (_bus, ask) => {
      const got = (await ask('events', first)).events;
      print(argv, got, true);
      if (!argv.follow) return;
      let last = Math.max(argv.since ?? 0, ...got.map((e) => e.seq));
      for (;;) {
        await new Promise((r) => setTimeout(r, FOLLOW_POLL_MS));
        last = await more(ask, { ...base, limit: 1000 }, last, argv);
      }
    });
  },
};

/** Print what came after `last`; returns the new last sequence number. */
async function more(
  ask: Ask,
  req: ControllerRequest<'events'>,
  last: number,
  argv: Args,
): Promise<number> {
  const got = (await ask('events', { ...req, sinceSeq: last })).events;
  print(argv, got, false);
  return Math.max(last, ...got.map((e) => e.seq));
}

function print(argv: Args, events: readonly ClusterEvent[], header: boolean): void {
  if (argv.json) {
    if (header && !argv.follow) process.stdout.write(JSON.stringify({ events }, null, 2) + '\n');
    // Following: one JSON object per line, as they come.
    else for (const e of events) process.stdout.write(JSON.stringify(e) + '\n');
    return;
  }
  // Fixed columns, so lines printed while following line up under the first header.
  const lines = [...(header ? [line(HEADERS)] : []), ...events.map((e) => line(eventRow(e)))];
  if (lines.length) process.stdout.write(lines.join('\n') + '\n');
}

const WIDTHS = [7, 24, 8, 10];

function line(cells: readonly string[]): string {
  return cells
    .map((c, i) => (i < WIDTHS.length ? c.padEnd(WIDTHS[i]!) : c))
    .join('  ')
    .trimEnd();
}
