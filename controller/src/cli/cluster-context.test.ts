import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NO_CONTEXTS, upsertContext } from '@drover/common';
import { readContextsFile, writeContextsFile } from '@drover/cli-kit';
import { writeLocalState } from '@drover/local-cluster/local-state';
import { clusterDefaults, contextFlag } from './cluster-context.js';

const CLI = fileURLToPath(new URL('./main.js', import.meta.url));

function withFile(fn: (path: string, env: NodeJS.ProcessEnv) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'drover-ctx-'));
  try {
    const path = join(dir, 'sub', 'contexts.json');
    fn(path, { DROVER_CONFIG: path, DROVER_LOCAL_DIR: join(dir, 'no-local') });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const prod = {
  name: 'prod',
  nats: ['tls://10.0.0.1:4222'],
  caFile: '/c/ca.crt',
  certFile: '/c/op.crt',
  keyFile: '/c/op.key',
};
const lab = { name: 'lab', nats: ['nats://10.9.0.1:4222'] };

test('contextFlag reads --context NAME and --context=NAME, not after --', () => {
  assert.equal(contextFlag(['jobs', '--context', 'a']), 'a');
  assert.equal(contextFlag(['--context=b', 'jobs']), 'b');
  assert.equal(contextFlag(['run', '--', 'x', '--context', 'c']), undefined);
});

test('defaults: named context > DROVER_NATS_* > current context > local', () => {
  withFile((path, env) => {
    assert.equal(clusterDefaults([], env).context, null, 'no file: the local defaults');
    writeContextsFile(path, upsertContext(upsertContext(NO_CONTEXTS, prod, true), lab, false));
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.deepEqual(readContextsFile(path).current, 'prod');
    const cur = clusterDefaults([], env);
    assert.deepEqual(cur, {
      nats: 'tls://10.0.0.1:4222',
      ca: '/c/ca.crt',
      cert: '/c/op.crt',
      key: '/c/op.key',
      context: 'prod',
    });
    assert.equal(clusterDefaults(['--context', 'lab'], env).nats, 'nats://10.9.0.1:4222');
    assert.equal(clusterDefaults([], { ...env, DROVER_CONTEXT: 'lab' }).context, 'lab');
    const e = { ...env, DROVER_NATS_SERVERS: 'nats://e:1' };
    assert.equal(clusterDefaults([], e).nats, 'nats://e:1', 'env beats the current context');
    assert.equal(clusterDefaults(['--context=prod'], e).context, 'prod', 'a named one beats env');
    assert.throws(() => clusterDefaults(['--context', 'nope'], env), /no context nope/);
    const other = clusterDefaults(['--nats', 'nats://o:1', 'jobs'], env);
    assert.equal(other.context, null, '--nats: not the current context');
    assert.equal(other.cert, undefined, 'nor its certificate');
  });
});

test("the local cluster's certificate goes only to its own URL", () => {
  withFile((_path, env) => {
    const dir = env.DROVER_LOCAL_DIR!;
    mkdirSync(dir, { recursive: true });
    const tls = { caFile: '/l/ca.crt', certFile: '/l/op.crt', keyFile: '/l/op.key' };
    writeLocalState({
      version: 1,
      phase: 'up',
      dir,
      upPid: 1,
      upStartTime: 1,
      createdAt: '2026-12-07T00:00:00Z',
      hosts: 3,
      natsUrl: 'nats://10.77.1.1:4222',
      tls,
      processes: [],
    });
    const local = { ca: tls.caFile, cert: tls.certFile, key: tls.keyFile };
    assert.deepEqual(clusterDefaults([], env), {
      nats: 'nats://10.77.1.1:4222',
      ...local,
      context: null,
    });
    const own = clusterDefaults(['--nats', 'nats://10.77.1.1:4222', 'jobs'], env);
    assert.equal(own.cert, local.cert, '--nats naming the local cluster: its certificate');
    // A bench's or a test's own NATS on this machine: no certificate of another cluster.
    const other = clusterDefaults(['--nats=nats://127.0.0.1:4333', 'jobs'], env);
    assert.deepEqual([other.ca, other.cert, other.key], [undefined, undefined, undefined]);
    assert.equal(
      clusterDefaults([], { ...env, DROVER_NATS_SERVERS: 'nats://e:1' }).cert,
      undefined,
    );
  });
});

test('drover context ls|use|show, and --context picks the cluster commands dial', () => {
  withFile((path, env) => {
    writeContextsFile(path, upsertContext(upsertContext(NO_CONTEXTS, prod, true), lab, false));
    const cli = (...args: string[]) =>
      spawnSync(process.execPath, [CLI, ...args], {
        encoding: 'utf8',
        env: { ...process.env, ...env, DROVER_CONTEXT: '', DROVER_NATS_SERVERS: '' },
        timeout: 30_000,
      });
    let r = cli('context', 'ls');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /\*\s+prod\s+tls:\/\/10\.0\.0\.1:4222/);
    r = cli('context', 'use', 'lab');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(readFileSync(path, 'utf8')).current, 'lab');
    r = cli('--json', 'context', 'show');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).name, 'lab');
    r = cli('context', 'use', 'nope');
    assert.equal(r.status, 3, 'unknown context: not found');
    assert.match(r.stderr, /no context nope/);
    // A command dials the context's NATS (nothing listens there: unavailable, naming it).
    r = cli('--context', 'lab', '--timeout', '1', 'hosts');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /10\.9\.0\.1:4222/);
    r = cli('--context', 'nope', 'hosts');
    assert.equal(r.status, 3);
  });
});
