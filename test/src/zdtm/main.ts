#!/usr/bin/env node
/**
 * CRIU's ZDTM static tests (the `h`-flavour selection of `zdtm.py run`), with raw CRIU and then
 * each one as a Drover job moved h1 → h2 on a two-host testbed; prints both pass counts, their
 * ratio and every test that fails through Drover with its reason (docs/ZDTM.md keeps them).
 * Manual, long (about an hour here), root, one at a time on the machine:
 *
 *   flock /tmp/drover-e2e.lock node test/dist/zdtm/main.js [--work DIR] [--tests REGEX]
 *       [--only-raw] [--skip-raw] [--as-root] [--shared]
 *
 * `--only-raw` stops after the raw run; `--skip-raw` takes the raw outcomes from the TAP report
 * of an earlier run (DIR/raw-report), so the two halves can hold the machine one at a time.
 * `--shared` runs each test in the suite's directory, which both hosts see (shared storage),
 * instead of in its job's directory (each host's own disk); results to DIR/results*-shared.json.
 * `--as-root` runs every test as root, raw and through Drover alike (see `rootEnv`): where
 * root lacks CAP_SYS_RESOURCE (these machines) that is the only way to see past the tests
 * that run as another uid. Its results go to DIR/results-root.json.
 *
 * The suite is built in DIR (default /var/tmp/drover-zdtm, outside the repository) from the
 * Debian source package deploy/setup-host.sh unpacked when it built CRIU ($DROVER_BUILD_DIR,
 * default /var/cache/drover/criu-build). Results: DIR/results.json.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ClusterFixture } from '../cluster/fixture.js';
import { runThroughDrover } from './zdtm-drover.js';
import { parseTap, prepareZdtm, readDescs, runRawZdtm, type ZdtmResult } from './zdtm-suite.js';

interface Results {
  startedAt: string;
  raw: ZdtmResult[];
  drover: (ZdtmResult & { unmapped: string[] })[];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      work: { type: 'string', default: '/var/tmp/drover-zdtm' },
      tests: { type: 'string', default: 'zdtm/static/.*' },
      'skip-raw': { type: 'boolean', default: false },
      'only-raw': { type: 'boolean', default: false },
      'as-root': { type: 'boolean', default: false },
      shared: { type: 'boolean', default: false },
    },
  });
  const work = values.work;
  const asRoot = values['as-root'];
  mkdirSync(work, { recursive: true });
  const log = join(work, 'zdtm.log');
  const say = (s: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);
  const placement = values.shared ? 'shared' : 'job-dir';
  const resultsFile = join(
    work,
    `results${asRoot ? '-root' : ''}${values.shared ? '-shared' : ''}.json`,
  );
  const results: Results = existsSync(resultsFile)
    ? (JSON.parse(readFileSync(resultsFile, 'utf8')) as Results)
    : { startedAt: new Date().toISOString(), raw: [], drover: [] };

  say(`building zdtm in ${work} (log: ${log})`);
  const tree = await prepareZdtm(
    work,
    process.env.DROVER_BUILD_DIR ?? '/var/cache/drover/criu-build',
    log,
  );
  const tap = join(work, asRoot ? 'raw-report-root' : 'raw-report', 'criu-testreport.tap');
  if (values['skip-raw'] && existsSync(tap)) {
    // A raw run made before (this harness's, or zdtm.py run by hand with --report DIR/raw-report).
    results.raw = parseTap(readFileSync(tap, 'utf8'));
  } else {
    say('raw CRIU: zdtm.py run -f h (this takes a while)');
    results.raw = await runRawZdtm(
      tree,
      values.tests,
      work,
      join(work, asRoot ? 'raw-root.log' : 'raw.log'),
      asRoot,
    );
    writeFileSync(resultsFile, JSON.stringify(results, null, 2));
  }
  const rawPassed = results.raw.filter((r) => r.ok).length;
  say(`raw CRIU: ${rawPassed} of ${results.raw.length} passed`);
  if (values['only-raw']) return;

  // --tests narrows Drover's half too (a raw report of the whole selection stays as it was).
  const only = new RegExp(values.tests);
  const tests = results.raw.map((r) => r.test).filter((t) => only.test(`zdtm/static/${t}`));
  const descs = await readDescs(join(tree.testDir, 'zdtm', 'static'), tests);
  const f = await ClusterFixture.start({ hosts: 2 });
  results.drover = [];
  try {
    for (const [i, test] of tests.entries()) {
      const r = await runThroughDrover(f, tree.testDir, test, descs.get(test)!, asRoot, placement);
      results.drover.push(r);
      say(`${i + 1}/${tests.length} ${test}: ${r.ok ? 'PASS' : `FAIL ${r.why ?? ''}`}`);
      writeFileSync(resultsFile, JSON.stringify(results, null, 2));
    }
  } finally {
    await f.stop();
  }
  console.log(summary(results));
}

/** Both counts, the ratio, and what fails through Drover (passing raw first). */
export function summary(r: Results): string {
  const raw = new Map(r.raw.map((x) => [x.test, x.ok]));
  const rawPassed = r.raw.filter((x) => x.ok).length;
  const passed = r.drover.filter((x) => x.ok).length;
  const bothPassed = r.drover.filter((x) => x.ok && raw.get(x.test)).length;
  const lines = [
    `raw CRIU: ${rawPassed}/${r.raw.length} passed`,
    `through drover migrate: ${passed}/${r.drover.length} passed (${bothPassed} of raw's ${rawPassed}: ${((100 * bothPassed) / Math.max(1, rawPassed)).toFixed(1)} %)`,
    'failing through Drover:',
    ...r.drover
      .filter((x) => !x.ok)
      .sort((a, b) => Number(raw.get(b.test)) - Number(raw.get(a.test)))
      .map((x) => `  ${x.test} (raw: ${raw.get(x.test) ? 'pass' : 'fail'}): ${x.why ?? ''}`),
  ];
  return lines.join('\n');
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
