/** The agent's CPU profile on SIGUSR2 (DROVER_CPU_PROFILE_DIR), in a child process of its own. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

// The child profiles itself, burns some CPU in a named function, signals itself twice, and exits
// once both profiles are written (or after 10 s).
const CHILD = `
import { profileOnSignal } from ${JSON.stringify(pathToFileURL(join(import.meta.dirname, 'cpu-profile.js')).href)};
import { readdirSync } from 'node:fs';
const dir = process.argv[1];
const lines = [];
profileOnSignal(dir, { info: (m, f) => lines.push(m), warn: (m, f) => lines.push(m) });
function burnForTheProfile() { let x = 0; const end = Date.now() + 150; while (Date.now() < end) x += Math.sqrt(x + 1); return x; }
setTimeout(() => {
  burnForTheProfile();
  process.kill(process.pid, 'SIGUSR2');
  setTimeout(() => process.kill(process.pid, 'SIGUSR2'), 100);
}, 200);
const t = setInterval(() => {
  if (readdirSync(dir).length >= 2) { clearInterval(t); console.log(lines.join(',')); }
}, 20);
setTimeout(() => process.exit(3), 10000).unref();
`;

test('with a directory, SIGUSR2 writes what was sampled since the last one, and profiling goes on', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cpu-profile-test-'));
  try {
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ['--input-type=module', '-e', CHILD, dir], (err, stdout) =>
        err ? reject(err) : resolve(stdout),
      ),
    );
    assert.equal(out.trim(), 'cpu profile written,cpu profile written');
    const files = readdirSync(dir).sort();
    assert.equal(files.length, 2);
    for (const f of files) assert.match(f, /^agent-\d+-[12]\.cpuprofile$/);
    const first = JSON.parse(readFileSync(join(dir, files[0]!), 'utf8')) as {
      nodes: { callFrame: { functionName: string } }[];
      samples: number[];
    };
    assert.ok(first.samples.length > 10, `${first.samples.length} samples`);
    assert.ok(
      first.nodes.some((n) => n.callFrame.functionName === 'burnForTheProfile'),
      'the burning function is in the first profile',
    );
    const second = JSON.parse(readFileSync(join(dir, files[1]!), 'utf8')) as { samples: number[] };
    assert.ok(second.samples.length > 0, 'the second profile has its own samples');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('without a directory, nothing is profiled and SIGUSR2 is not taken', async () => {
  const { profileOnSignal } = await import('./cpu-profile.js');
  const before = process.listenerCount('SIGUSR2');
  profileOnSignal(undefined, { info() {}, warn() {} } as never);
  assert.equal(process.listenerCount('SIGUSR2'), before);
});
