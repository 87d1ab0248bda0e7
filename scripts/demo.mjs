#!/usr/bin/env node
// The README's main job until `drover up` lands: a local demo cluster on this machine (3 emulated
// hosts with their own namespaces, NATS with JetStream, an agent per host, the controller), then
// a short tour through the real `drover` CLI: run a job, migrate it, drain a host. Everything is
// torn down at the end (or on Ctrl-C). Needs root and a build (`./run demo` does both).
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentCluster, ControllerProcess, Testbed } from '@drover/testbed';
import { drover } from '../test/dist/mod.js';

const say = (s) => process.stdout.write(`\n\x1b[1m== ${s}\x1b[0m\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function cli(urls, args) {
  process.stdout.write(`$ drover ${args.join(' ')}\n`);
  const r = await drover(urls, args);
  process.stdout.write(r.stdout);
  if (r.code !== 0) process.stdout.write(r.stderr);
  return r;
}

const hosts = Number(process.env.DROVER_DEMO_HOSTS ?? 3);
say(`bringing up ${hosts} emulated hosts, NATS with JetStream, ${hosts} agents and the controller`);
const tb = await Testbed.create({ hosts, nats: 'single' });
let cluster;
let ctl;
try {
  const urls = [...tb.nats.urls];
  cluster = await AgentCluster.start(tb);
  ctl = await ControllerProcess.start(tb, { id: 'demo-controller' });
  for (let i = 0; i < 60; i++) {
    const r = await drover(urls, ['--json', 'hosts']);
    if (r.code === 0 && JSON.parse(r.stdout).hosts.length === hosts) break;
    await sleep(250);
  }
  await cli(urls, ['hosts']);

  say('run a job on h1: a counter that appends to a file on shared storage');
  const shared = join(tb.runDir, 'shared', 'demo');
  mkdirSync(shared, { recursive: true });
  const count = join(shared, 'count');
  const run = await cli(urls, [
    'run',
    '--host',
    'h1',
    '--name',
    'counter',
    '--',
    '/bin/sh',
    '-c',
    `i=0; while :; do i=$((i+1)); echo $i >> ${count}; sleep 0.1; done`,
  ]);
  const job = /^(job-[0-9a-f]+) running/.exec(run.stdout)?.[1];
  if (!job) throw new Error(`drover run failed: ${run.stderr}`);
  await sleep(1500);
  const last = () => readFileSync(count, 'utf8').trim().split('\n').pop();
  process.stdout.write(`counter at ${last()}\n`);

  say('migrate it live to h2 (the timeline shows where the time went)');
  await cli(urls, ['migrate', job, '--to', 'h2']);
  await sleep(1000);
  process.stdout.write(`counter at ${last()} (it kept counting, with the same PIDs inside)\n`);
  await cli(urls, ['inspect', job]);

  say('drain h2: cordon it and move every job off');
  await cli(urls, ['drain', 'h2']);
  await cli(urls, ['jobs']);
  await cli(urls, ['ops']);
  await cli(urls, ['signal', job, 'SIGKILL']);
  say('done; tearing everything down');
} finally {
  await ctl?.kill();
  await cluster?.close();
  await tb.teardown();
}
