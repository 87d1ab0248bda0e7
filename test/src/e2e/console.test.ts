/**
 * The web console in a real headless Chromium (Debian's, driven by playwright-core): the page
 * loads and shows the cluster; an operator's console migrates a job from the page and the page
 * follows the migration through its phases to its end; a drain shows each job moving; a viewer's
 * console is read-only. Screenshots are kept under `.test-results/console/`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { ClusterJob } from '@drover/protocol';
import { tlsFlags } from '@drover/testbed';
import { CLI_MAIN, REPO_ROOT } from '../cluster/cli.js';
import { ClusterFixture } from '../cluster/fixture.js';
import { waitReady, workloadCommand } from '../workloads/mod.js';
import { JOB_ENV, waitFor } from './helpers.js';

/** Debian's Chromium (deploy/setup-host.sh installs it with DROVER_TEST_TOOLS=1). */
const CHROMIUM = '/usr/bin/chromium';
const SHOTS = join(REPO_ROOT, '.test-results', 'console');

let f: ClusterFixture;
let browser: Browser;
const consoles: ChildProcess[] = [];

/** Start `drover console` as `who`; resolves with the login URL it prints. */
async function startConsole(who: 'operator' | 'viewer', actions: boolean): Promise<string> {
  const child = spawn(
    process.execPath,
    [
      CLI_MAIN,
      '--nats',
      f.urls.join(','),
      ...tlsFlags('nats', f.tb.certs![who]),
      '--json',
      'console',
      '--listen',
      '127.0.0.1:0',
      ...(actions ? ['--actions'] : []),
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        NODE_TEST_CONTEXT: undefined,
        DROVER_LOCAL_DIR: '/nonexistent/drover-local',
        DROVER_NATS_SERVERS: undefined,
      },
    },
  );
  consoles.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`drover console exited: ${err}`);
    return out.includes('\n');
  }, 30_000);
  const printed = JSON.parse(out.split('\n')[0]!) as { loginUrl: string; actions: boolean };
  assert.equal(printed.actions, actions);
  return printed.loginUrl;
}

async function shot(page: Page, name: string): Promise<void> {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function json<T>(args: string[]): Promise<T> {
  const r = await f.as('operator', ['--json', ...args]);
  assert.equal(r.code, 0, `drover ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

before(async () => {
  assert.ok(
    existsSync(CHROMIUM),
    `${CHROMIUM} is missing: DROVER_TEST_TOOLS=1 deploy/setup-host.sh installs Debian's chromium`,
  );
  f = await ClusterFixture.start({ hosts: 3, secure: true });
  // The flags the machine's notes name: no sandbox as root, and nothing that reaches out.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
  for (const c of consoles) if (c.exitCode === null) c.kill('SIGTERM');
  await f?.stop();
});

describe('the web console in Chromium', () => {
  test("an operator's console shows the cluster and follows a migration started from the page to its end", async () => {
    const dir = join(f.tb.runDir, 'shared', 'console-memory');
    mkdirSync(dir, { recursive: true });
    // A slow link into h2 (~16 MB/s): the 64 MiB job's pages take a few seconds to reach it,
    // long enough to see the move dumping them, its byte meter running.
    await f.tb.host('h2').limitIncoming(16_000_000);
    const env = Object.entries(JOB_ENV).flatMap(([k, v]) => ['--env', `${k}=${v}`]);
    const job = await json<ClusterJob>([
      'run',
      '--host',
      'h1',
      '--name',
      'web-memory',
      ...env,
      '--',
      ...workloadCommand('memory', { dir, mb: 64 }),
    ]);
    await waitReady(dir, 30_000);
    const loginUrl = await startConsole('operator', true);
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    try {
      await page.goto(loginUrl);
      // Signed in: the token is gone from the address bar.
      assert.doesNotMatch(page.url(), /token=/);
      await page.waitForSelector('#hosts tr[data-host="h3"]');
      await page.waitForSelector(`#jobs tr[data-job="${job.id}"]`);
      assert.match((await page.textContent('#who')) ?? '', /operator .* actions on/);
      assert.equal(await page.textContent(`#jobs tr[data-job="${job.id}"] td.host`), 'h1');
      assert.match((await page.textContent('#conn')) ?? '', /live/);
      await shot(page, '1-cluster');
      // Migrate from the page: pick h2, click Migrate.
      await page.selectOption(`select[data-job-destination="${job.id}"]`, 'h2');
      await page.click(`#jobs tr[data-job="${job.id}"] button[data-action="migrate"]`);
      const progress = `#ops .op[data-kind="migrate"] .progress[data-job="${job.id}"]`;
      await page.waitForSelector(`${progress}[data-phase="dumping"]:not([data-pct="0"])`, {
        timeout: 60_000,
      });
      await shot(page, '2-migration-dumping');
      await page.waitForSelector(
        `#ops .op[data-kind="migrate"][data-state="done"] ${'.progress'}[data-phase="done"]`,
        {
          timeout: 120_000,
        },
      );
      // (Selectors, not page functions: the console's CSP forbids eval, as it should.)
      await page.waitForSelector(`#jobs tr[data-job="${job.id}"] td.host:text-is("h2")`, {
        timeout: 30_000,
      });
      const done = await page.textContent('#ops .op[data-kind="migrate"][data-state="done"]');
      assert.match(done ?? '', /h1 → h2/);
      assert.match(done ?? '', /downtime \d+ ms/);
      await shot(page, '3-migration-done');
      // The audit trail names who asked.
      await page.waitForSelector('#audit td.mono:text-is("migrate")');
    } finally {
      await page.close();
      await f.tb.host('h2').limitIncoming(null);
    }
  });

  test('a drain shows each job moving to its end; image sets appear', async () => {
    const loginUrl = await startConsole('operator', true);
    const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
    try {
      await page.goto(loginUrl);
      await page.waitForSelector('#hosts tr[data-host="h2"]');
      const a = await json<ClusterJob>([
        'run',
        '--host',
        'h3',
        '--name',
        'drain-a',
        '--',
        'sleep',
        '600',
      ]);
      const b = await json<ClusterJob>([
        'run',
        '--host',
        'h3',
        '--name',
        'drain-b',
        '--',
        'sleep',
        '600',
      ]);
      await page.waitForSelector(`#jobs tr[data-job="${b.id}"]`);
      await page.click('#hosts tr[data-host="h3"] button[data-action="drain"]');
      for (const id of [a.id, b.id]) {
        await page.waitForSelector(
          `#ops .op[data-kind="drain"] tr[data-drain-job="${id}"] .progress[data-phase="done"]`,
          { timeout: 120_000 },
        );
      }
      await page.waitForSelector('#ops .op[data-kind="drain"][data-state="done"]', {
        timeout: 60_000,
      });
      await page.waitForSelector('#hosts tr[data-host="h3"] .badge.cordoned');
      await shot(page, '4-drain-done');
      await page.click('#hosts tr[data-host="h3"] button[data-action="uncordon"]');
      await page.waitForSelector('#hosts tr[data-host="h3"] .badge.cordoned', {
        state: 'detached',
      });
      // A checkpoint from the page: its image set shows up.
      await page.click(`#jobs tr[data-job="${a.id}"] button[data-action="checkpoint"]`);
      await page.waitForSelector('#sets tr[data-set] .badge.ok', { timeout: 120_000 });
      await shot(page, '5-image-set');
    } finally {
      await page.close();
    }
  });

  test("a viewer's console is read-only: no actions on the page, and the server refuses them", async () => {
    const loginUrl = await startConsole('viewer', false);
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    try {
      await page.goto(loginUrl);
      await page.waitForSelector('#hosts tr[data-host="h1"]');
      assert.match((await page.textContent('#who')) ?? '', /viewer .* read-only/);
      assert.equal(await page.locator('button[data-action]').count(), 0);
      const refused = await page.evaluate(async () => {
        const r = await fetch('/api/actions/drain', {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-drover-console': '1' },
          body: JSON.stringify({ host: 'h1' }),
        });
        return { status: r.status, body: await r.text() };
      });
      assert.equal(refused.status, 403);
      assert.match(refused.body, /read-only/);
      // Without the printed token there is no way in.
      const stranger = await browser.newPage();
      const res = await stranger.goto(loginUrl.replace(/token=\w+/, 'token=nope'));
      assert.equal(res?.status(), 401);
      await stranger.close();
      await shot(page, '6-viewer');
    } finally {
      await page.close();
    }
    // A viewer's certificate cannot start a console that acts.
    const r = await f.as('viewer', ['console', '--listen', '127.0.0.1:0', '--actions']);
    assert.equal(r.code, 6, r.stderr);
    assert.match(r.stderr, /a viewer may only look/);
  });
});
