/**
 * The SSH deployer end to end: emulated hosts with sshd (pinned host keys), a NATS that requires
 * TLS and per-role identities, a controller, and `drover-deploy` run as operators run it. Without
 * a certificates directory install is refused and nothing changes; check + install issue each
 * host's agent certificate and bring up agents that register over TLS as themselves; a second
 * install changes nothing; wrong host key, unreachable host and a failed command fail only their
 * host; a rolling upgrade (migrations over mutual-TLS streams) keeps every workload running;
 * uninstall leaves nothing: no files, processes or cgroups on the hosts, no host in the
 * controller, and (with --purge) their certificates revoked and their NATS users gone.
 *
 * Over 500 lines on purpose: one suite on one testbed with sshd in every host (minutes to bring
 * up); its tests are the deployer's verbs in the order an operator runs them.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentClient, Bus } from '@drover/bus';
import { identityOfCertificate, identityPaths, issueIdentity } from '@drover/certs';
import { ControllerProcess, Testbed, type SshdService } from '@drover/testbed';
import { deployCli, droverCli, type CliResult } from '../cluster/cli.js';
import { requestVerdict, waitReady, workloadCommand, type WorkloadName } from '../workloads/mod.js';
import { droverCgroups, JOB_ENV, waitFor } from './helpers.js';

/** Inside each host (its own /srv): the install root and the agents' shared state dir path. */
const INSTALL_ROOT = '/srv/drover-install';
const STATE_DIR = '/srv/drover';

let tb: Testbed;
let ctl: ControllerProcess;
let urls: string[];
let sshd: SshdService[];
let inventory: string;
/** Where the inventory's `nats.reload` command records each run. */
let reloadsFile: string;

/** `drover --nats URLS ARGS...` as the testbed's operator (NATS requires a certificate). */
function drover(natsUrls: readonly string[], args: readonly string[]): Promise<CliResult> {
  const op = tb.certs!.operator;
  return droverCli([
    '--nats',
    natsUrls.join(','),
    ...['--nats-ca', op.caFile, '--nats-cert', op.certFile, '--nats-key', op.keyFile],
    ...args,
  ]);
}

/** Run `drover-deploy -i INVENTORY ARGS...`. */
function deploy(args: readonly string[], inv = inventory, timeoutMs = 600_000): Promise<CliResult> {
  // install writes the CLI's context: into the run, not the machine's ~/.config.
  return deployCli(['-i', inv, ...args], {
    env: { DROVER_CONFIG: join(tb.runDir, 'contexts.json') },
    timeoutMs,
  });
}

interface Result {
  host: string;
  ok: boolean;
  changed: boolean;
  detail: string;
  data: Record<string, unknown>;
  error: { failure: string | null; step: string | null; stderrTail: string | null } | null;
}

async function deployJson(
  args: readonly string[],
  inv = inventory,
): Promise<{ code: number; results: Result[]; raw: CliResult }> {
  const r = await deploy(['--json', ...args], inv);
  let parsed: { results?: Result[] };
  try {
    parsed = JSON.parse(r.stdout) as { results?: Result[] };
  } catch {
    assert.fail(
      `drover-deploy ${args.join(' ')} printed no JSON (exit ${r.code}):\n${r.stderr}${r.stdout}`,
    );
  }
  return { code: r.code, results: parsed.results ?? [], raw: r };
}

function byHost(results: Result[], name: string): Result {
  const r = results.find((x) => x.host === name);
  assert.ok(r, `no result for ${name}`);
  return r;
}

async function json<T>(args: string[]): Promise<T> {
  const r = await drover(urls, ['--json', ...args]);
  assert.equal(r.code, 0, `drover ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

interface HostView {
  host: string;
  reachable: boolean;
  cordoned: boolean;
}
interface JobView {
  id: string;
  host: string;
  state: string;
}

/**
 * Write an inventory; `extra` adds a line to a host (e.g. an override). With `certs` (the
 * default) it names the testbed's certificates directory and its operator identity.
 */
function writeInventory(
  file: string,
  hosts: { name: string; address: string; hostKey: string; extra?: string }[],
  heartbeatTimeoutSec = 60,
  certs = true,
): string {
  const lines = [
    '# drover-deploy inventory for the testbed (written by deploy.test.ts)',
    ...(certs ? [`certs: ${tb.certs!.dir}`] : []),
    'nats:',
    `  servers: [${urls.join(', ')}]`,
    `  reload: 'echo "$DROVER_NATS_SECURITY_CONF" >> ${reloadsFile}'`,
    'controller:',
    `  heartbeatTimeoutSec: ${heartbeatTimeoutSec}`,
    '  operator: operator',
    'defaults:',
    `  key: ${sshd[0]!.clientPrivateKeyPath}`,
    '  connectTimeoutSec: 5',
    `  installRoot: ${INSTALL_ROOT}`,
    `  stateDir: ${STATE_DIR}`,
    '  agent:',
    '    heartbeatMs: 500',
    '    logLevel: debug',
    'hosts:',
    ...hosts.flatMap((h) => [
      `  - name: ${h.name}`,
      `    address: ${h.address}`,
      `    hostKey: "${h.hostKey}"`,
      `    labels: { testbed: "${tb.runId}" }`,
      ...(h.extra ? [`    ${h.extra}`] : []),
    ]),
    '',
  ];
  const path = join(tb.runDir, file);
  writeFileSync(path, lines.join('\n'));
  return path;
}

/** The agent certificate of `host` in the testbed's certificates directory. */
const agentCert = (host: string) => identityPaths(tb.certs!.dir, { role: 'agent', name: host });

/** The lines `nats.reload` wrote so far. */
const reloads = (): string[] =>
  existsSync(reloadsFile) ? readFileSync(reloadsFile, 'utf8').split('\n').filter(Boolean) : [];

before(async () => {
  // Secure: NATS requires TLS and holds every identity to its role (the agents' certificates are
  // issued by the testbed for h1..h3, naming their addresses).
  tb = await Testbed.create({ hosts: 3, nats: 'single', secure: true });
  // h1's was issued before it had its address: the deployer re-issues it.
  await issueIdentity(tb.certs!.dir, { role: 'agent', name: 'h1' });
  urls = [...tb.nats!.urls];
  reloadsFile = join(tb.runDir, 'nats-reloads');
  // h3 has no certificate yet: the deployer issues it.
  rmSync(agentCert('h3').certFile);
  rmSync(agentCert('h3').keyFile);
  sshd = await Promise.all(tb.hosts.map((h) => tb.startSshd(h)));
  ctl = await ControllerProcess.start(tb);
  inventory = writeInventory(
    'inventory.yaml',
    sshd.map((s) => ({ name: s.host, address: s.address, hostKey: s.hostPublicKey })),
  );
});

after(async () => {
  await ctl?.kill();
  // The agents deploy started live inside the hosts: the teardown ends them with the hosts.
  await tb?.teardown();
});

/** A host's path as the runner sees it (its /srv is the host's state dir). */
function srv(host: string, inside: string): string {
  return join(tb.host(host).stateDir, inside.slice('/srv/'.length));
}

describe('drover-deploy on the testbed', () => {
  const installPids: Record<string, number> = {};

  test('without a certificates directory install and upgrade are refused (exit 2); nothing changes', async () => {
    const hosts = sshd.map((s) => ({ name: s.host, address: s.address, hostKey: s.hostPublicKey }));
    const plain = writeInventory('inventory-plain.yaml', hosts, 60, false);
    for (const verb of ['install', 'upgrade']) {
      const r = await deploy([verb], plain);
      assert.equal(r.code, 2, `${verb}: ${r.stderr}${r.stdout}`);
      assert.match(
        r.stderr,
        /no certificates directory: name it in .*--certs DIR.*--insecure deploys plain NATS and streams.*Nothing was changed/,
      );
      assert.doesNotMatch(r.stderr, /h\d: /, 'no host was contacted');
    }
    // --insecure and a certificates directory contradict each other: refused too.
    const both = await deploy(['install', '--insecure']);
    assert.equal(both.code, 2, both.stderr);
    assert.match(both.stderr, /--insecure and the certificates directory .* exclude each other/);
    // Nothing on any host, nothing issued, no reload.
    for (const h of ['h1', 'h2', 'h3']) {
      assert.equal(existsSync(srv(h, INSTALL_ROOT)), false, `${h}: install root made`);
    }
    assert.equal(existsSync(agentCert('h3').certFile), false, 'no certificate issued');
    assert.deepEqual(reloads(), []);

    // `certs` (with --certs instead of the inventory's) issues what install needs and touches no
    // host: h3's certificate was missing, h1's did not name its stream address.
    const made = await deploy(['certs', '--json', '--certs', tb.certs!.dir], plain);
    assert.equal(made.code, 0, made.stderr);
    const certs = (JSON.parse(made.stdout) as { certs: { issued: string[]; changed: boolean } })
      .certs;
    assert.deepEqual(certs.issued, [
      `agent h1 (does not name ${sshd[0]!.address})`,
      'agent h3 (missing)',
    ]);
    assert.equal(certs.changed, false, 'the same identities: the NATS config is unchanged');
    assert.deepEqual(reloads(), [], 'nats.reload runs only when the config changed');
    for (const h of ['h1', 'h2', 'h3']) assert.equal(existsSync(srv(h, INSTALL_ROOT)), false);
  });

  test('check, then install: 3 agents register with the controller; a second install changes nothing', async () => {
    const checked = await deployJson(['check']);
    assert.equal(checked.code, 0, checked.raw.stderr + checked.raw.stdout);
    for (const r of checked.results) {
      assert.equal(r.ok, true, r.detail);
      const facts = r.data.facts as {
        uid: number;
        checkpointRestore: boolean;
        criuVersion: string;
      };
      assert.equal(facts.uid, 0);
      assert.equal(facts.checkpointRestore, true);
      assert.match(facts.criuVersion, /^4\./);
      assert.equal(r.data.mode, 'supervisor', 'no systemd in testbed hosts');
    }
    // The NATS server the deployer reaches is one Drover expects (the testbed starts >= 2.12).
    const nats = (JSON.parse(checked.raw.stdout) as { nats: { version: string; problem: unknown } })
      .nats;
    assert.equal(nats.problem, null, JSON.stringify(nats));
    assert.match(nats.version, /^2\.(1[2-9]|[2-9]\d)\./);

    const first = await deployJson(['install']);
    assert.equal(first.code, 0, first.raw.stderr + first.raw.stdout);
    assert.match(first.raw.stderr, /h1: uploading release/);
    assert.match(first.raw.stderr, /h2: waiting for its heartbeat at the controller/);
    for (const r of first.results) {
      assert.equal(r.ok, true, r.detail);
      assert.equal(r.changed, true);
      installPids[r.host] = r.data.agentPid as number;
    }
    // `certs` issued everything already: install issues nothing more.
    const certs = (
      JSON.parse(first.raw.stdout) as { certs: { issued: string[]; changed: boolean } }
    ).certs;
    assert.deepEqual(certs.issued, []);
    assert.equal(certs.changed, false);
    for (const [i, h] of ['h1', 'h2', 'h3'].entries()) {
      // The host holds the CA, its own certificate and key: 0600 files in 0700 directories.
      const tlsDir = `${INSTALL_ROOT}/etc/tls`;
      assert.equal(statSync(srv(h, tlsDir)).mode & 0o777, 0o700);
      for (const f of ['agent-ca.pem', 'agent-cert.pem', 'agent-key.pem']) {
        assert.equal(statSync(srv(h, `${tlsDir}/${f}`)).mode & 0o777, 0o600, `${h} ${f}`);
        assert.equal(statSync(srv(h, `${tlsDir}/${f}`)).uid, 0);
      }
      const remoteCert = srv(h, `${tlsDir}/agent-cert.pem`);
      assert.deepEqual(readFileSync(remoteCert), readFileSync(agentCert(h).certFile));
      assert.deepEqual(await identityOfCertificate(remoteCert), { role: 'agent', name: h });
      const addr = sshd[i]!.address;
      assert.equal(new X509Certificate(readFileSync(remoteCert)).checkIP(addr), addr);
      // The agent uses them for NATS and for streams (mutual TLS), and its stream listens so.
      const cfg = JSON.parse(readFileSync(srv(h, `${INSTALL_ROOT}/etc/agent.json`), 'utf8')) as {
        nats: { tls: unknown };
        streamTls: unknown;
      };
      const files = {
        caFile: `${tlsDir}/agent-ca.pem`,
        certFile: `${tlsDir}/agent-cert.pem`,
        keyFile: `${tlsDir}/agent-key.pem`,
      };
      assert.deepEqual(cfg.nats.tls, files);
      // Streams also check peers against the CA's revocation list, pushed with the certificates.
      assert.deepEqual(cfg.streamTls, { ...files, crlFile: `${tlsDir}/crl.pem` });
      assert.deepEqual(
        readFileSync(srv(h, `${tlsDir}/crl.pem`)),
        readFileSync(join(tb.certs!.dir, 'crl.pem')),
      );
      const log = readFileSync(srv(h, `${INSTALL_ROOT}/log/agent.log`), 'utf8');
      assert.match(log, /"msg":"listening".*"tls":true/);
    }
    // Each agent is connected to NATS as its own identity (the server's view of its clients)...
    const connz = (await (
      await fetch(`${tb.nats!.servers[0]!.monitorUrl}/connz?auth=true&limit=1024`)
    ).json()) as { connections: { authorized_user?: string }[] };
    const users = connz.connections.map((c) => c.authorized_user);
    for (const h of ['h1', 'h2', 'h3']) assert.ok(users.includes(`CN=${h},OU=agent,O=drover`), h);
    // ...and answers a controller identity over TLS.
    const bus = await Bus.connect({ servers: urls, name: 'deploy-test', tls: tb.certs!.runner });
    try {
      for (const h of ['h1', 'h2', 'h3']) {
        const info = await new AgentClient(bus, h).call('info', {}, 10_000);
        assert.equal(info.host, h);
      }
    } finally {
      await bus.close();
    }
    const { hosts } = await json<{ hosts: HostView[] }>(['hosts']);
    assert.deepEqual(
      hosts
        .filter((h) => h.reachable)
        .map((h) => h.host)
        .sort(),
      ['h1', 'h2', 'h3'],
    );
    // Files land with restrictive modes; the release is root's and not writable by others.
    for (const h of ['h1', 'h2', 'h3']) {
      assert.equal(statSync(srv(h, `${INSTALL_ROOT}/etc`)).mode & 0o777, 0o700);
      assert.equal(statSync(srv(h, `${INSTALL_ROOT}/etc/agent.json`)).mode & 0o777, 0o600);
      const main = srv(h, `${INSTALL_ROOT}/current/agent/dist/main.js`);
      assert.equal(statSync(main).mode & 0o022, 0);
    }

    const second = await deployJson(['install']);
    assert.equal(second.code, 0, second.raw.stderr + second.raw.stdout);
    assert.deepEqual(
      (JSON.parse(second.raw.stdout) as { certs: { issued: string[] } }).certs.issued,
      [],
    );
    for (const r of second.results) {
      assert.equal(r.ok, true, r.detail);
      assert.equal(r.changed, false, `${r.host}: ${r.detail}`);
      assert.match(r.detail, /unchanged/);
      assert.equal(r.data.agentPid, installPids[r.host], 'the agent was not restarted');
    }
    assert.doesNotMatch(second.raw.stderr, /uploading/);

    // The same through the main CLI's thin `drover deploy` verb, as a human table.
    const st = await drover(urls, ['deploy', '-i', inventory, 'status']);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, /^HOST\s+RESULT\s+CHANGED\s+DETAIL/m);
    for (const h of ['h1', 'h2', 'h3']) {
      assert.match(
        st.stdout,
        new RegExp(`^${h}\\s+ok\\s+no\\s+running, pid ${installPids[h]}.*reachable`, 'm'),
      );
    }
  });

  test('a wrong pinned host key, an unreachable host and a failed command fail only their host', async () => {
    const bad = writeInventory('inventory-bad.yaml', [
      { name: 'h1', address: sshd[0]!.address, hostKey: sshd[0]!.hostPublicKey },
      // h2 pinned with h3's key.
      { name: 'h2', address: sshd[1]!.address, hostKey: sshd[2]!.hostPublicKey },
      // h3 with an install root that cannot be created.
      {
        name: 'h3',
        address: sshd[2]!.address,
        hostKey: sshd[2]!.hostPublicKey,
        extra: 'installRoot: /proc/drover-install',
      },
      // Nobody has this address on the testbed's network.
      { name: 'h4', address: `10.77.${tb.subnet}.99`, hostKey: sshd[0]!.hostPublicKey },
    ]);
    const r = await deployJson(['install'], bad);
    assert.equal(r.code, 1, r.raw.stderr);
    const h1 = byHost(r.results, 'h1');
    assert.equal(h1.ok, true, h1.detail);
    assert.equal(h1.changed, false);
    const h2 = byHost(r.results, 'h2');
    assert.equal(h2.ok, false);
    assert.equal(h2.error?.failure, 'host-key');
    assert.match(h2.detail, /host key mismatch .* pinned SHA256:\S+, the host offered SHA256:\S+/);
    const h3 = byHost(r.results, 'h3');
    assert.equal(h3.ok, false);
    assert.equal(h3.error?.failure, 'command');
    assert.equal(h3.error?.step, 'layout');
    assert.match(h3.error?.stderrTail ?? '', /\/proc\/drover-install/);
    const h4 = byHost(r.results, 'h4');
    assert.equal(h4.ok, false);
    assert.equal(h4.error?.failure, 'unreachable');
    assert.match(h4.detail, /cannot reach 10\.77\.\d+\.99:22/);
    // h4 is new: its certificate was issued, and the NATS config, changed, reloaded (once).
    const certs = (JSON.parse(r.raw.stdout) as { certs: { issued: string[]; changed: boolean } })
      .certs;
    assert.deepEqual(certs.issued, ['agent h4 (missing)']);
    assert.equal(certs.changed, true);
    assert.deepEqual(reloads(), [join(tb.certs!.dir, 'nats-security.conf')]);
    assert.match(
      readFileSync(join(tb.certs!.dir, 'nats-security.conf'), 'utf8'),
      /user: "CN=h4,OU=agent,O=drover"/,
    );
    // The human table says the same, one row per host.
    const human = await deploy(['status'], bad);
    assert.equal(human.code, 1);
    assert.match(human.stdout, /^h1\s+ok\s/m);
    assert.match(human.stdout, /^h2\s+FAILED \(host-key\)\s/m);
    assert.match(human.stdout, /^h4\s+FAILED \(unreachable\)\s/m);
    assert.match(human.stdout, /status: 4 hosts, 2 ok, 2 failed, 0 changed/);
    // Nothing happened to the agents that were running.
    const st = await deployJson(['status']);
    for (const h of ['h1', 'h2', 'h3']) {
      assert.equal(byHost(st.results, h).data.agentPid, installPids[h]);
    }
    // An invalid inventory is refused before anything runs (exit 2).
    const invalid = await deploy(
      ['check'],
      writeInventory('inventory-invalid.yaml', [
        { name: 'h1', address: sshd[0]!.address, hostKey: 'ssh-ed25519 nope' },
      ]),
    );
    assert.equal(invalid.code, 2, invalid.stderr);
    assert.match(invalid.stderr, /hosts\[0\] \(h1\)\.hostKey: expected an OpenSSH public key line/);
  });

  test('a rolling upgrade drains each host in turn; every workload keeps running and verifies', async () => {
    const plan: [WorkloadName, string, { mb?: number }][] = [
      ['node', 'h1', {}],
      ['python', 'h1', {}],
      ['threads', 'h2', {}],
      ['memory', 'h3', { mb: 32 }],
    ];
    const env = Object.entries(JOB_ENV).flatMap(([k, v]) => ['--env', `${k}=${v}`]);
    const jobs: { id: string; dir: string }[] = [];
    for (const [name, host, opts] of plan) {
      const dir = join(tb.runDir, 'shared', `deploy-${name}`);
      mkdirSync(dir, { recursive: true });
      const job = await json<{ id: string }>([
        'run',
        '--host',
        host,
        '--name',
        `deploy-${name}`,
        ...env,
        '--',
        ...workloadCommand(name, { dir, ...opts }),
      ]);
      jobs.push({ id: job.id, dir });
    }
    for (const j of jobs) await waitReady(j.dir, 30_000);

    const made = await deploy([
      'bundle',
      '--release',
      'v2',
      '--out',
      join(tb.runDir, 'bundles'),
      '--json',
    ]);
    assert.equal(made.code, 0, made.stderr);
    const v2 = JSON.parse(made.stdout) as { path: string; id: string; release: string };
    assert.equal(v2.release, 'v2');

    const up = await deployJson(['upgrade', '--bundle', v2.path]);
    assert.equal(up.code, 0, up.raw.stderr + up.raw.stdout);
    const moved = new Set<string>();
    for (const h of ['h1', 'h2', 'h3']) {
      const r = byHost(up.results, h);
      assert.equal(r.ok, true, r.detail);
      assert.equal(r.changed, true);
      assert.equal(r.data.release, v2.id);
      assert.notEqual(r.data.agentPid, installPids[h], `${h}'s agent was restarted`);
      for (const id of r.data.moved as string[]) moved.add(id);
    }
    // Hosts went one at a time: each was drained before its agent stopped.
    const order = [
      ...up.raw.stderr.matchAll(/^(h\d): (draining|stopping the agent|agent started)/gm),
    ].map((m) => `${m[1]} ${m[2]}`);
    assert.deepEqual(order, [
      'h1 draining',
      'h1 stopping the agent',
      'h1 agent started',
      'h2 draining',
      'h2 stopping the agent',
      'h2 agent started',
      'h3 draining',
      'h3 stopping the agent',
      'h3 agent started',
    ]);
    for (const j of jobs) assert.ok(moved.has(j.id), `${j.id} was never moved off a drained host`);

    const st = await deployJson(['status']);
    for (const r of st.results) {
      assert.equal(r.data.running, true);
      assert.equal(r.data.release, v2.id, `${r.host} runs ${String(r.data.release)}`);
    }
    const { hosts } = await json<{ hosts: HostView[] }>(['hosts']);
    for (const h of hosts) {
      assert.equal(h.reachable, true, h.host);
      assert.equal(h.cordoned, false, `${h.host} was uncordoned`);
    }
    const { jobs: live } = await json<{ jobs: JobView[] }>(['jobs']);
    for (const j of jobs) {
      const running = live.filter((x) => x.id === j.id && x.state === 'running');
      assert.equal(running.length, 1, `${j.id} is live on ${running.length} hosts`);
      const verdict = await requestVerdict(
        j.dir,
        (sig) => void drover(urls, ['signal', j.id, sig]),
        30_000,
      );
      assert.equal(verdict.ok, true, `${j.id}: ${JSON.stringify(verdict)}`);
    }
    // Upgrading to the release every host runs changes nothing and drains nothing.
    const again = await deployJson(['upgrade', '--bundle', v2.path]);
    assert.equal(again.code, 0, again.raw.stderr);
    for (const r of again.results) assert.equal(r.changed, false, r.detail);
    assert.doesNotMatch(again.raw.stderr, /draining/);
    for (const j of jobs) await drover(urls, ['signal', j.id, 'SIGKILL']);
    await waitFor(async () => {
      const { jobs: now } = await json<{ jobs: JobView[] }>(['jobs']);
      return !now.some((x) => jobs.some((j) => j.id === x.id) && x.state === 'running');
    }, 30_000);
  });

  test('an upgrade whose agent does not come up is rolled back, release and config; the rolling stops there', async () => {
    const before = await deployJson(['status']);
    const v2 = byHost(before.results, 'h2').data.release as string;
    const made = await deploy([
      'bundle',
      '--release',
      'v3',
      '--out',
      join(tb.runDir, 'bundles'),
      '--json',
    ]);
    assert.equal(made.code, 0, made.stderr);
    const v3 = JSON.parse(made.stdout) as { path: string; id: string };
    // h2's new config makes its agent fail at start (no such port): no heartbeat comes.
    const broken = writeInventory(
      'inventory-broken.yaml',
      sshd.map((s) => ({
        name: s.host,
        address: s.address,
        hostKey: s.hostPublicKey,
        ...(s.host === 'h2' ? { extra: `agent: { streamListen: "${s.address}:70000" }` } : {}),
      })),
      8,
    );
    const up = await deployJson(['upgrade', '--bundle', v3.path], broken);
    assert.equal(up.code, 1, up.raw.stderr + up.raw.stdout);
    const [h1, h2, h3] = ['h1', 'h2', 'h3'].map((h) => byHost(up.results, h));
    assert.equal(h1!.ok, true, h1!.detail);
    assert.equal(h1!.data.release, v3.id);
    assert.equal(h2!.ok, false);
    // The agent dies at start: caught as it starts, or as no heartbeat comes.
    assert.ok(['heartbeat', 'start'].includes(h2!.error?.step ?? ''), h2!.detail);
    assert.match(h2!.detail, new RegExp(`; rolled back to ${v2}, left cordoned$`));
    assert.equal(h3!.ok, false);
    assert.match(h3!.detail, /not upgraded: the rolling upgrade stopped at h2/);
    const st = await deployJson(['status']);
    assert.equal(byHost(st.results, 'h1').data.release, v3.id);
    for (const h of ['h2', 'h3']) {
      assert.equal(byHost(st.results, h).data.release, v2, `${h} runs its previous release`);
      assert.equal(byHost(st.results, h).data.running, true);
    }
    // h2's agent runs its previous config again (it heartbeats), and waits cordoned.
    const agentJson = JSON.parse(
      (await tb.host('h2').exec(['cat', `${INSTALL_ROOT}/etc/agent.json`])).stdout,
    ) as { streamListen: string };
    assert.match(agentJson.streamListen, /:7070$/);
    const { hosts } = await json<{ hosts: HostView[] }>(['hosts']);
    const h2view = hosts.find((h) => h.host === 'h2');
    assert.equal(h2view?.cordoned, true);
    assert.equal(h2view?.reachable, true);
    assert.equal((await drover(urls, ['uncordon', 'h2'])).code, 0);
    // With the inventory fixed, the upgrade completes: h1 is already done.
    const fixed = await deployJson(['upgrade', '--bundle', v3.path]);
    assert.equal(fixed.code, 0, fixed.raw.stderr + fixed.raw.stdout);
    assert.equal(byHost(fixed.results, 'h1').changed, false);
    assert.equal(byHost(fixed.results, 'h2').data.release, v3.id);
    assert.equal(byHost(fixed.results, 'h3').data.release, v3.id);
  });

  test('uninstall refuses a host with jobs, then removes agents and files and leaves no process', async () => {
    const dir = join(tb.runDir, 'shared', 'deploy-uninstall');
    mkdirSync(dir, { recursive: true });
    const env = Object.entries(JOB_ENV).flatMap(([k, v]) => ['--env', `${k}=${v}`]);
    const job = await json<{ id: string }>([
      'run',
      '--host',
      'h1',
      ...env,
      '--',
      ...workloadCommand('python', { dir }),
    ]);
    await waitReady(dir, 30_000);
    // Each installed agent gave its scratch a tmpfs of its own, with large folios.
    for (const h of tb.hosts) {
      const mounts = await h.exec(['cat', '/proc/self/mounts']);
      assert.match(
        mounts.stdout,
        /^drover-scratch \/dev\/shm\/drover tmpfs \S*huge=within_size/m,
        `${h.name}: ${mounts.stdout}`,
      );
    }
    const refused = await deployJson(['uninstall', 'h1']);
    assert.equal(refused.code, 1);
    assert.equal(byHost(refused.results, 'h1').error?.failure, 'refused');
    assert.match(
      byHost(refused.results, 'h1').detail,
      new RegExp(`still runs 1 jobs \\(${job.id}\\)`),
    );
    assert.ok(existsSync(srv('h1', `${INSTALL_ROOT}/current`)), 'nothing was removed');
    assert.equal((await drover(urls, ['signal', job.id, 'SIGKILL'])).code, 0);
    await waitFor(async () => {
      const { jobs } = await json<{ jobs: JobView[] }>(['jobs']);
      return !jobs.some((j) => j.id === job.id && j.state === 'running');
    }, 30_000);

    const reloadsBefore = reloads().length;
    const gone = await deployJson(['uninstall', '--purge']);
    assert.equal(gone.code, 0, gone.raw.stderr + gone.raw.stdout);
    for (const r of gone.results) {
      assert.equal(r.ok, true, r.detail);
      assert.equal(r.changed, true);
      assert.equal(r.data.stopped, true);
      assert.equal(r.data.forgotten, true, `${r.host}: the controller forgot it`);
    }
    // The controller lists none of them any more (not `unreachable, 1 job` forever).
    assert.deepEqual((await json<{ hosts: HostView[] }>(['hosts'])).hosts, []);
    // Their certificates are revoked: in the CRL, gone from the directory, no NATS user left
    // (nats.reload ran with the regenerated config).
    const revocation = (JSON.parse(gone.raw.stdout) as { revocation: { revoked: string[] } })
      .revocation;
    assert.deepEqual(
      revocation.revoked.map((r) => r.split(' ')[0]),
      tb.hosts.map((h) => h.name),
    );
    const conf = readFileSync(join(tb.certs!.dir, 'nats-security.conf'), 'utf8');
    for (const h of tb.hosts) {
      assert.equal(existsSync(agentCert(h.name).certFile), false, `${h.name}: certificate left`);
      assert.equal(conf.includes(`CN=${h.name},OU=agent`), false, `${h.name}: NATS user left`);
    }
    assert.equal(reloads().length, reloadsBefore + 1, 'nats.reload ran once');
    const crl = await new Promise<string>((resolve, reject) => {
      const c = spawn('openssl', ['crl', '-in', join(tb.certs!.dir, 'crl.pem'), '-noout', '-text']);
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.once('error', reject);
      c.once('exit', () => resolve(out));
    });
    assert.equal((crl.match(/Serial Number:/g) ?? []).length, tb.hosts.length, crl);
    for (const h of tb.hosts) {
      assert.equal(existsSync(srv(h.name, INSTALL_ROOT)), false, `${h.name}: install root left`);
      assert.equal(existsSync(srv(h.name, STATE_DIR)), false, `${h.name}: state dir left`);
      const ps = await h.exec(['ps', '-eo', 'pid,args']);
      assert.equal(ps.code, 0, ps.stderr);
      assert.doesNotMatch(
        ps.stdout,
        /drover-install|drover-service|agent\/dist\/main\.js/,
        `${h.name}:\n${ps.stdout}`,
      );
      // No empty `drover` cgroup left, in the v2 hierarchy or any v1 one.
      const cg = await droverCgroups(h);
      assert.equal(cg, '', `${h.name}: cgroups left:\n${cg}`);
      // Nor the scratch tmpfs the agent mounted.
      const mounts = await h.exec(['cat', '/proc/self/mounts']);
      assert.doesNotMatch(mounts.stdout, /^drover-scratch /m, `${h.name}: scratch tmpfs left`);
    }
    // The controller stops hearing them.
    await waitFor(async () => {
      const { hosts } = await json<{ hosts: HostView[] }>(['hosts']);
      return hosts.every((h) => !h.reachable);
    }, 20_000);
    const again = await deployJson(['uninstall', '--purge']);
    assert.equal(again.code, 0, again.raw.stderr);
    for (const r of again.results) assert.equal(r.changed, false, r.detail);
  });
});
