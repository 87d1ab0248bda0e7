/** The README's main job: `./run demo` brings up the local cluster, runs the tour, tears down. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../cluster/agents.js';

test('the demo tour runs end to end and leaves nothing behind', () => {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'scripts', 'demo.mjs')], {
    encoding: 'utf8',
    timeout: 240_000,
    env: { ...process.env, PATH: `/usr/local/sbin:${process.env.PATH ?? ''}` },
  });
  assert.equal(r.status, 0, `demo failed:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`);
  assert.match(r.stdout, /moved h1 → h2/);
  assert.match(r.stdout, /frozen \(downtime\) \d+ ms/);
  assert.match(r.stdout, /drain of h2: done/);
  const counts = [...r.stdout.matchAll(/counter at (\d+)/g)].map((m) => Number(m[1]));
  assert.equal(counts.length, 2);
  assert.ok(
    counts[1]! > counts[0]!,
    `the job did not keep counting across the migration: ${counts.join(' → ')}`,
  );
  // Only this demo's namespaces count: other runs may be going on on this machine. Its run id is
  // in the paths it printed (the job's shared directory lives under the run's directory).
  const runId = /drtb[0-9a-f]{6}/.exec(r.stdout)?.[0];
  assert.ok(runId, 'no run id in the demo output');
  const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  assert.ok(!netns.includes(runId), `the demo left network namespaces behind:\n${netns}`);
});

test('`npx drover` works from the repository root', () => {
  const r = spawnSync('npx', ['--no-install', 'drover', '--help'], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /drover migrate <job>/);
});
