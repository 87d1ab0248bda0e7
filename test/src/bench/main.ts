#!/usr/bin/env node
/**
 * `npm run bench`: every benchmark of issue 8 in one run — migrations of a memory job against
 * the baselines, a cluster checkpoint, the controller at scale — printed as one table and kept
 * as JSON. Reports figures; asserts nothing about them.
 *
 * Usage: node test/dist/bench/main.js [--quick] [--only a,b] [--reps N] [--sizes 64,256,1024]
 *        [--modes stop-copy,post-copy] [--net host|job] [--no-baselines] [--out FILE] [--markdown]
 * Sections: migration (with its baselines), checkpoint, scale.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../cluster/cli.js';
import { benchLog } from './bench-log.js';
import { benchCheckpoint } from './checkpoint-bench.js';
import { describeMachine, machineFacts } from './machine.js';
import { benchMigration, type Net } from './migration-bench.js';
import { renderMarkdown, renderNotes, renderTable, type Figure } from './report.js';
import { benchScale } from './scale-bench.js';

const SECTIONS = ['migration', 'checkpoint', 'scale'] as const;
type Section = (typeof SECTIONS)[number];

export const USAGE = `Usage: npm run bench -- [options]   (or: node test/dist/bench/main.js [options])
  --quick             one rep, small sizes (a few minutes)
  --only a,b          sections: ${SECTIONS.join(', ')}
  --reps N            runs per figure (default 3; 1 with --quick)
  --sizes 64,256,1024 job sizes in MiB for the migration section
  --modes stop-copy,post-copy
  --net host|job      the migrated jobs' network: the host's (default) or their own
  --no-baselines      skip the by-hand and CRIU-floor baselines
  --out FILE          where the JSON goes (default bench-results/bench-<time>.json)
  --markdown          print the table as Markdown
  --help              this text
Needs root (namespaces, CRIU). Reports figures; asserts nothing about them.`;

/** A bad option: printed as one line with the usage hint, exit 2, no stack trace. */
class UsageError extends Error {}

function options(argv: readonly string[]) {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        quick: { type: 'boolean', default: false },
        only: { type: 'string' },
        reps: { type: 'string' },
        sizes: { type: 'string' },
        out: { type: 'string' },
        markdown: { type: 'boolean', default: false },
        modes: { type: 'string' },
        net: { type: 'string' },
        'no-baselines': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const quick = values.quick === true;
  const reps = Number(values.reps ?? (quick ? 1 : 3));
  const sizes = (values.sizes ?? (quick ? '64' : '64,256,1024')).split(',').map(Number);
  const only = (values.only?.split(',') ?? [...SECTIONS]) as Section[];
  for (const s of only)
    if (!SECTIONS.includes(s))
      throw new UsageError(`unknown section ${s} (sections: ${SECTIONS.join(', ')})`);
  if (values.net !== undefined && values.net !== 'host' && values.net !== 'job')
    throw new UsageError(`--net ${values.net}: want host or job`);
  if (!Number.isInteger(reps) || reps < 1)
    throw new UsageError(`--reps ${values.reps}: want a whole number >= 1`);
  if (sizes.some((n) => !(Number.isInteger(n) && n > 0)))
    throw new UsageError(`--sizes ${values.sizes}: want sizes in MiB, e.g. 64,256`);
  return { values, quick, reps, sizes, only };
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = options(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`bench: ${err.message}\nbench: see --help\n`);
    process.exitCode = 2;
    return;
  }
  const { values, quick, reps, sizes, only } = parsed;
  if (values.help === true) {
    process.stdout.write(USAGE + '\n');
    return;
  }

  const started = new Date();
  const t0 = performance.now();
  const log = benchLog(t0);
  const machine = machineFacts();
  log(`machine: ${describeMachine(machine)}`);
  const figures: Figure[] = [];
  const failures: string[] = [];
  const section = async (name: Section, run: () => Promise<Figure[]>): Promise<void> => {
    if (!only.includes(name)) return;
    const s0 = performance.now();
    try {
      figures.push(...(await run()));
    } catch (err) {
      const e = err as Error;
      failures.push(`${name}: ${e.stack ?? e.message}`);
      log(`${name} FAILED: ${e.stack ?? e.message}`);
    }
    log(`${name}: ${((performance.now() - s0) / 1000).toFixed(0)} s`);
  };
  const net = (values.net ?? 'host') as Net;
  const modes = (values.modes ?? 'stop-copy,post-copy').split(',') as ('stop-copy' | 'post-copy')[];
  await section('migration', () =>
    benchMigration({
      sizesMb: sizes,
      reps,
      log,
      modes,
      noBaselines: values['no-baselines'] === true,
      net,
    }),
  );
  await section('checkpoint', () =>
    benchCheckpoint({ jobs: quick ? 6 : 24, hosts: 3, mb: 16, reps, log }),
  );
  await section('scale', () =>
    benchScale({
      hosts: quick ? 100 : 1000,
      jobs: quick ? 1000 : 10_000,
      drainJobs: quick ? 20 : 100,
      heartbeatMs: 2000,
      reps,
      windowMs: quick ? 2000 : 5000,
      log,
    }),
  );
  const durationSec = Math.round((performance.now() - t0) / 1000);
  const machineAfter = machineFacts();
  const report = {
    startedAt: started.toISOString(),
    durationSec,
    options: { quick, reps, sizesMb: sizes, sections: only },
    machine,
    loadAtEnd: machineAfter.load1,
    figures,
    failures,
  };
  const out =
    values.out ??
    join(REPO_ROOT, 'bench-results', `bench-${started.toISOString().replace(/[:.]/g, '-')}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
  writeFileSync(join(dirname(out), 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  // The same table in Markdown, for docs/PERFORMANCE.md.
  writeFileSync(
    join(dirname(out), 'latest.md'),
    `${started.toISOString()}, ${durationSec} s; ${describeMachine(machine)}; load at end ${machineAfter.load1}\n\n${renderMarkdown(figures)}\nNotes:\n\n${renderNotes(
      figures,
    )
      .split('\n')
      .map((l) => `- ${l}`)
      .join('\n')}\n`,
  );
  const lines = [
    '',
    `Drover benchmarks, ${started.toISOString()}, ${durationSec} s (median of ${reps} run(s) each; ratios are medians over the baseline's median)`,
    `machine: ${describeMachine(machine)}; load at end ${machineAfter.load1}`,
    '',
    values.markdown === true ? renderMarkdown(figures) : renderTable(figures),
    '',
    'notes:',
    renderNotes(figures),
    '',
    ...failures.map((f) => `FAILED ${f.split('\n')[0]}`),
    `JSON: ${out}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  process.exitCode = failures.length ? 1 : 0;
}

await main();
