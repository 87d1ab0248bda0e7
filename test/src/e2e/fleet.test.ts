/**
 * The whole fleet from one inventory (issue #20's "done when"), as docs/DEPLOY.md's walkthrough
 * runs it: from an empty certificates directory and an inventory naming 3 emulated hosts (sshd,
 * their own addresses and disks), `drover-deploy install` brings up a 3-node NATS cluster (TLS,
 * per-role authorization, TLS routes, JetStream), a controller on each host (HA by the lease)
 * and the agents, and writes the CLI's context; `drover --context` runs, migrates and drains a
 * job that verifies its own state; a rolling upgrade goes through NATS servers, controllers and
 * agents one at a time while the job keeps running; `uninstall --purge` of the one agent-only
 * host leaves nothing on it and no host in the controller, and its old certificate is refused by
 * NATS and by a remaining agent's stream port; `uninstall --purge` of the rest leaves nothing on
 * any host.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { Bus } from '@drover/bus';
import { identityPaths, type CertFiles } from '@drover/certs';
import { Testbed, type SshdService } from '@drover/testbed';
import type { ClientTlsOptions } from '@drover/transfer';
import { deployCli, droverCli, type CliResult } from '../cluster/cli.js';
import { requestVerdict, waitReady, workloadCommand } from '../workloads/mod.js';
import { droverCgroups, JOB_ENV, streamRefusal, waitFor, waitForValue } from './helpers.js';

/** Inside each host (its own /srv): the install root and the state directory. */
const INSTALL_ROOT = '/srv/drover-install';
const STATE_DIR = '/srv/drover';
/** The control plane's hosts (a NATS server, a controller and an agent on each). */
const HOSTS = ['h1', 'h2', 'h3'];
/** The one agent-only host, which leaves the fleet before the rest. */
const LEAVING = 'h4';
const AGENTS = [...HOSTS, LEAVING];

let tb: Testbed;
let sshd: SshdService[];
/** The operator's machine: an empty certificates directory, the inventory, the contexts file. */
let certs: string;
let inventory: string;
let contexts: string;

/** The environment of every command: the operator's own contexts file, nothing else leaking. */
function env(): Record<string, string | undefined> {
  return {
    DROVER_CONFIG: contexts,
    DROVER_CONTEXT: undefined,
    DROVER_LOCAL_DIR: '/nonexistent/drover-local',
    DROVER_NATS_SERVERS: undefined,
    DROVER_NATS_CA: undefined,
    DROVER_NATS_CERT: undefined,
    DROVER_NATS_KEY: undefined,
  };
}

/** `drover --context fleet ARGS...`: no --nats, no certificate flags. */
function drover(args: readonly string[]): Promise<CliResult> {
  return droverCli(['--context', 'fleet', ...args], { env: env(), timeoutMs: 300_000 });
}

async function json<T>(args: string[]): Promise<T> {
  const r = await drover(['--json', ...args]);
  assert.equal(r.code, 0, `drover ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

function deploy(args: readonly string[], timeoutMs = 600_000): Promise<CliResult> {
  return deployCli(['-i', inventory, ...args], { env: env(), timeoutMs });
}

interface Result {
  host: string;
  ok: boolean;
  changed: boolean;
  detail: string;
  data: Record<string, unknown>;
}

async function deployJson(args: readonly string[]) {
  const raw = await deploy(['--json', ...args]);
  let parsed: { results?: Result[]; context?: { name: string; current: boolean } | null };
  try {
    parsed = JSON.parse(raw.stdout) as typeof parsed;
  } catch {
    assert.fail(
      `drover-deploy ${args.join(' ')} printed no JSON (exit ${raw.code}):\n${raw.stderr}`,
    );
  }
  return { code: raw.code, results: parsed.results ?? [], context: parsed.context, raw };
}

function row(results: Result[], name: string): Result {
  const r = results.find((x) => x.host === name);
  assert.ok(r, `no result for ${name} in ${results.map((x) => x.host).join(', ')}`);
  return r;
}

/** A host's path as the runner sees it (the host's /srv is its own directory). */
function srv(host: string, inside: string): string {
  return join(tb.host(host).stateDir, inside.slice('/srv/'.length));
}

/** The hosts running the control plane, as the testbed serves them over ssh. */
const control = (): SshdService[] => sshd.filter((s) => HOSTS.includes(s.host));

/** Nothing of drover left on a host: no install root, no state directory, no process. */
async function assertNothingLeft(name: string): Promise<void> {
  const h = tb.host(name);
  assert.equal(existsSync(srv(name, INSTALL_ROOT)), false, `${name}: install root left`);
  assert.equal(existsSync(srv(name, STATE_DIR)), false, `${name}: state dir left`);
  const ps = await h.exec(['ps', '-eo', 'pid,args']);
  assert.doesNotMatch(
    ps.stdout,
    /drover-install|drover-service|nats-server|agent\/dist|controller\/dist/,
    `${name}:\n${ps.stdout}`,
  );
}

interface JobView {
  id: string;
  host: string;
  state: string;
}

before(async () => {
  // No NATS, no controller, no certificates: the deployer brings up everything.
  tb = await Testbed.create({ hosts: AGENTS.length, nats: 'none' });
  sshd = await Promise.all(tb.hosts.map((h) => tb.startSshd(h)));
  const op = join(tb.runDir, 'operator');
  mkdirSync(op, { recursive: true });
  certs = join(op, 'certs');
  contexts = join(op, 'config', 'drover', 'contexts.json');
  inventory = join(op, 'fleet.yaml');
  writeFileSync(
    inventory,
    [
      '# The fleet of docs/DEPLOY.md, on the testbed (written by fleet.test.ts)',
      'certs: ./certs',
      'context: fleet',
      'nats:',
      '  hosts: [h1, h2, h3]',
      'controller:',
      '  hosts: [h1, h2, h3]',
      '  jobNetwork:',
      `    subnet: ${tb.jobNetwork.subnet}`,
      `    gateway: ${tb.jobNetwork.gateway}`,
      'defaults:',
      `  key: ${sshd[0]!.clientPrivateKeyPath}`,
      '  connectTimeoutSec: 5',
      `  installRoot: ${INSTALL_ROOT}`,
      `  stateDir: ${STATE_DIR}`,
      '  agent:',
      '    heartbeatMs: 500',
      'hosts:',
      ...sshd.flatMap((s) => [
        `  - name: ${s.host}`,
        `    address: ${s.address}`,
        `    hostKey: "${s.hostPublicKey}"`,
      ]),
      '',
    ].join('\n'),
  );
});

after(async () => {
  // What the deployer started lives inside the hosts: the teardown ends it with them.
  await tb?.teardown();
});

describe('the whole fleet from one inventory', () => {
  const jobDir = () => join(tb.runDir, 'shared', 'fleet-python');
  let jobId = '';

  test('certs init on an empty directory, check, install: NATS cluster, controllers, agents, a context', async () => {
    assert.equal(existsSync(certs), false, 'the certificates directory starts empty');
    const nodes = control().flatMap((s) => ['--nats-node', `${s.host}=${s.address}`]);
    const init = await droverCli(
      ['certs', 'init', '--dir', certs, ...nodes, '--operators', 'deployer'],
      { env: env() },
    );
    assert.equal(init.code, 0, init.stderr);

    const checked = await deployJson(['check']);
    assert.equal(checked.code, 0, checked.raw.stderr + checked.raw.stdout);
    for (const h of HOSTS) {
      assert.equal(row(checked.results, h).ok, true);
      assert.match(
        row(checked.results, `${h}/nats`).detail,
        /nats-server 2\.\d+\.\d+ .*will listen on 10\.77\./,
      );
    }

    const first = await deployJson(['install']);
    assert.equal(first.code, 0, first.raw.stderr + first.raw.stdout);
    // Rows in order: NATS servers, controllers, then agents.
    assert.deepEqual(
      first.results.map((r) => r.host),
      [...HOSTS.map((h) => `${h}/nats`), ...HOSTS.map((h) => `${h}/controller`), ...AGENTS],
    );
    for (const r of first.results) {
      assert.equal(r.ok, true, `${r.host}: ${r.detail}`);
      assert.equal(r.changed, true, r.host);
    }
    // The control plane came up before any agent was started.
    const lines = first.raw.stderr.split('\n');
    const lastControl = lines.findLastIndex((l) => /^h\d\/controller: /.test(l));
    const firstAgent = lines.findIndex((l) => /^h\d: agent started/.test(l));
    assert.ok(lastControl >= 0 && firstAgent > lastControl, first.raw.stderr);
    assert.deepEqual(first.context, { ...first.context, name: 'fleet', current: true });

    for (const [i, h] of HOSTS.entries()) {
      const addr = sshd[i]!.address;
      // Each NATS server listens on its own host's address, with certificates uploaded to the
      // host's own disk, JetStream in its own state directory, TLS routes to the two others.
      const conf = readFileSync(srv(h, `${INSTALL_ROOT}/etc/nats/nats.conf`), 'utf8');
      assert.match(conf, new RegExp(`listen: "${addr.replace(/\./g, '\\.')}:4222"`));
      assert.match(conf, /store_dir: "\/srv\/drover\/nats"/);
      assert.match(conf, /verify_and_map: true/);
      assert.equal((conf.match(/nats-route:\/\//g) ?? []).length, 2);
      assert.doesNotMatch(conf, new RegExp(tb.runDir), 'no path of the operator machine');
      for (const f of ['nats-cert.pem', 'nats-key.pem', 'controller-key.pem', 'agent-key.pem'])
        assert.equal(statSync(srv(h, `${INSTALL_ROOT}/etc/tls/${f}`)).mode & 0o777, 0o600);
      assert.ok(readdirSync(srv(h, `${STATE_DIR}/nats`)).length > 0, `${h}: JetStream store`);
      const ps = await tb.host(h).exec(['ps', '-eo', 'args']);
      assert.match(ps.stdout, /nats-server -c \/srv\/drover-install\/etc\/nats\/nats\.conf/);
      assert.match(ps.stdout, /controller\/dist\/main\.js --config/);
      assert.match(ps.stdout, /agent\/dist\/main\.js --config/);
    }
    // The CLI finds the cluster by its context alone.
    const ctx = JSON.parse(readFileSync(contexts, 'utf8')) as {
      current: string;
      contexts: { name: string; nats: string[]; certFile: string }[];
    };
    assert.equal(ctx.current, 'fleet');
    assert.deepEqual(
      ctx.contexts[0]?.nats,
      control().map((s) => `nats://${s.address}:4222`),
    );
    assert.match(ctx.contexts[0]?.certFile ?? '', /operator\/deployer\.crt$/);
    const ls = await droverCli(['context', 'ls'], { env: env() });
    assert.match(ls.stdout, /^\*\s+fleet\s+nats:\/\//m);
    const { hosts } = await json<{ hosts: { host: string; reachable: boolean }[] }>(['hosts']);
    assert.deepEqual(
      hosts
        .filter((h) => h.reachable)
        .map((h) => h.host)
        .sort(),
      AGENTS,
    );

    // A second install changes nothing.
    const second = await deployJson(['install']);
    assert.equal(second.code, 0, second.raw.stderr);
    for (const r of second.results) assert.equal(r.changed, false, `${r.host}: ${r.detail}`);
  });

  test('drover --context runs, migrates and drains a job that verifies its own state', async () => {
    mkdirSync(jobDir(), { recursive: true });
    const jenv = Object.entries(JOB_ENV).flatMap(([k, v]) => ['--env', `${k}=${v}`]);
    const job = await json<{ id: string }>([
      'run',
      '--host',
      'h1',
      '--name',
      'fleet-python',
      ...jenv,
      '--',
      ...workloadCommand('python', { dir: jobDir() }),
    ]);
    jobId = job.id;
    await waitReady(jobDir(), 30_000);
    const mig = await drover(['migrate', jobId, '--to', 'h2']);
    assert.equal(mig.code, 0, mig.stderr + mig.stdout);
    const drain = await drover(['drain', 'h2']);
    assert.equal(drain.code, 0, drain.stderr + drain.stdout);
    const { jobs } = await json<{ jobs: JobView[] }>(['jobs']);
    const live = jobs.filter((j) => j.id === jobId && j.state === 'running');
    assert.equal(live.length, 1);
    assert.notEqual(live[0]!.host, 'h2', 'drained off h2');
    assert.equal((await drover(['uncordon', 'h2'])).code, 0);
    const verdict = await requestVerdict(
      jobDir(),
      (sig) => void drover(['signal', jobId, sig]),
      30_000,
    );
    assert.equal(verdict.ok, true, JSON.stringify(verdict));
  });

  test('a rolling upgrade of everything, one at a time: NATS, controllers, agents; the job keeps running', async () => {
    const made = await deploy([
      'bundle',
      '--release',
      'v2',
      '--out',
      join(tb.runDir, 'bundles'),
      '--json',
    ]);
    assert.equal(made.code, 0, made.stderr);
    const v2 = JSON.parse(made.stdout) as { path: string; id: string };
    const up = await deployJson(['upgrade', '--bundle', v2.path]);
    assert.equal(up.code, 0, up.raw.stderr + up.raw.stdout);
    for (const r of up.results) {
      assert.equal(r.ok, true, `${r.host}: ${r.detail}`);
      assert.equal(r.changed, true, r.host);
    }
    // One at a time, in order: each server serves again before the next restarts.
    const order = [
      ...up.raw.stderr.matchAll(
        /^(h\d(?:\/nats|\/controller)?): (restarting the \w+|waiting for JetStream|waiting for a controller|draining)/gm,
      ),
    ].map((m) => `${m[1]} ${m[2]}`);
    assert.deepEqual(order, [
      ...HOSTS.flatMap((h) => [`${h}/nats restarting the nats`, `${h}/nats waiting for JetStream`]),
      ...HOSTS.flatMap((h) => [
        `${h}/controller restarting the controller`,
        `${h}/controller waiting for a controller`,
      ]),
      ...AGENTS.map((h) => `${h} draining`),
    ]);
    const st = await deployJson(['status']);
    for (const r of st.results) {
      assert.equal(r.data.running, true, r.host);
      assert.equal(r.data.release, v2.id, `${r.host} runs ${String(r.data.release)}`);
    }
    const { jobs } = await json<{ jobs: JobView[] }>(['jobs']);
    assert.equal(jobs.filter((j) => j.id === jobId && j.state === 'running').length, 1);
    const verdict = await requestVerdict(
      jobDir(),
      (sig) => void drover(['signal', jobId, sig]),
      30_000,
    );
    assert.equal(verdict.ok, true, JSON.stringify(verdict));
  });

  test('uninstall --purge of one host: not in the controller, nothing left, its certificate refused', async () => {
    // What the leaving host keeps: its agent certificate and key, read before the revocation.
    const op = join(tb.runDir, 'operator');
    const old: CertFiles = {
      caFile: join(certs, 'ca.crt'),
      certFile: join(op, `${LEAVING}-old.crt`),
      keyFile: join(op, `${LEAVING}-old.key`),
    };
    const current = identityPaths(certs, { role: 'agent', name: LEAVING });
    copyFileSync(current.certFile, old.certFile);
    copyFileSync(current.keyFile, old.keyFile);
    /** TLS options from certificate files, to h1's agent (the stream server that stays). */
    const tlsFrom = (files: CertFiles): ClientTlsOptions => ({
      key: readFileSync(files.keyFile, 'utf8'),
      cert: readFileSync(files.certFile, 'utf8'),
      ca: readFileSync(files.caFile, 'utf8'),
      peer: 'h1',
    });
    const h1 = sshd.find((s) => s.host === 'h1')!.address;
    const natsConnect = (files: CertFiles): Promise<Bus> =>
      Bus.connect({
        servers: control().map((s) => `nats://${s.address}:4222`),
        name: `${LEAVING} old`,
        tls: files,
        requestTimeoutMs: 3000,
      });
    // Before: the certificate gets into NATS and past TLS to h1's stream port (its HELLO).
    await (await natsConnect(old)).close();
    assert.equal((await streamRefusal(h1, tlsFrom(old))).kind, 'remote');

    const gone = await deployJson(['uninstall', '--purge', LEAVING]);
    assert.equal(gone.code, 0, gone.raw.stderr + gone.raw.stdout);
    const r = row(gone.results, LEAVING);
    assert.equal(r.ok, true, r.detail);
    assert.equal(r.changed, true, r.detail);
    assert.equal(r.data.forgotten, true, `${LEAVING}: the controller forgot it`);
    // The NATS servers the deployer runs got the config without its user, and reloaded.
    for (const h of HOSTS) {
      const n = row(gone.results, `${h}/nats`);
      assert.equal(n.ok, true, `${n.host}: ${n.detail}`);
      assert.equal(n.changed, true, `${n.host}: ${n.detail}`);
    }
    const { revocation } = JSON.parse(gone.raw.stdout) as { revocation: { revoked: string[] } };
    assert.deepEqual(
      revocation.revoked.map((x) => x.split(' ')[0]),
      [LEAVING],
    );
    // The controller lists only the hosts that stay.
    const { hosts } = await json<{ hosts: { host: string }[] }>(['hosts']);
    assert.deepEqual(hosts.map((h) => h.host).sort(), HOSTS);
    await assertNothingLeft(LEAVING);
    const cg = await droverCgroups(tb.host(LEAVING));
    assert.equal(cg, '', `${LEAVING}: cgroups left:\n${cg}`);
    // Its old certificate: refused by NATS...
    const refused = await natsConnect(old).then(
      async (b) => {
        await b.close();
        return null;
      },
      (err: unknown) => err,
    );
    assert.ok(refused !== null, 'NATS still lets the removed host in');
    assert.match(String(refused), /authoriz|permission|denied|closed/i);
    // ...and, once h1's agent re-read the CRL pushed to it, at the TLS handshake of its stream.
    const after = await waitForValue(async () => {
      const e = await streamRefusal(h1, tlsFrom(old));
      return e.kind === 'remote' ? undefined : e;
    }, 15_000);
    assert.notEqual(after.kind, 'remote', after.message);
    // Another agent still gets as far as its HELLO, and the control hosts keep their agents.
    const h2 = tlsFrom(identityPaths(certs, { role: 'agent', name: 'h2' }));
    assert.equal((await streamRefusal(h1, h2)).kind, 'remote');
  });

  test('uninstall --purge leaves nothing on any host', async () => {
    assert.equal((await drover(['signal', jobId, 'SIGKILL'])).code, 0);
    await waitFor(async () => {
      const { jobs } = await json<{ jobs: JobView[] }>(['jobs']);
      return !jobs.some((j) => j.id === jobId && j.state === 'running');
    }, 30_000);
    const gone = await deployJson(['uninstall', '--purge']);
    assert.equal(gone.code, 0, gone.raw.stderr + gone.raw.stdout);
    // Agents first, the control plane last (controllers, then NATS servers).
    assert.deepEqual(
      gone.results.map((r) => r.host),
      [...AGENTS, ...HOSTS.map((h) => `${h}/controller`), ...HOSTS.map((h) => `${h}/nats`)],
    );
    for (const r of gone.results) assert.equal(r.ok, true, `${r.host}: ${r.detail}`);
    for (const h of tb.hosts) await assertNothingLeft(h.name);
    for (const unit of ['drover-agent', 'drover-nats', 'drover-controller'])
      assert.equal(existsSync(`/etc/systemd/system/${unit}.service`), false, unit);
    const again = await deployJson(['uninstall', '--purge']);
    assert.equal(again.code, 0, again.raw.stderr);
    for (const r of again.results) assert.equal(r.changed, false, `${r.host}: ${r.detail}`);
  });
});
