/**
 * Restarting what died in a local cluster (`drover up` on a cluster with a dead agent, controller
 * or NATS server), jobs untouched: each process is started again exactly as `drover up` started
 * it — the command line, environment and log files recorded in cluster.json when it came up —
 * and the state file gets the new PIDs. A dead host (its init) cannot come back without its jobs:
 * that still takes `drover down` and `drover up`.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { childrenOf } from '@drover/native';
import { Bus } from '@drover/bus';
import { DroverError, ErrorCode } from '@drover/common';
import {
  writeLocalState,
  type LocalClusterState,
  type LocalProcess,
  type Relaunch,
} from './local-state.js';
// How a command enters an emulated host (as Host.spawn does: the agent's jobs get host-relative
// cgroups).
import { JOIN_HOST_CGROUPS } from './host-scripts.js';
import { names } from './names.js';
import { cmdline, environ, exeName, sleep, startTime } from './proc.js';

function envOf(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of environ(pid)) {
    const i = kv.indexOf('=');
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

/** How to start a root-namespace process (NATS, the controller) again: read off the running one. */
export function rootRecipe(pid: number, logs: { stdout: string; stderr: string }): Relaunch {
  return { argv: cmdline(pid), env: envOf(pid), ...logs };
}

/**
 * How to start an agent again: read off the `nsenter` that runs it (its parent), whose command
 * line holds the host's namespaces and the gated agent command; the host's cgroup is joined first.
 */
export function hostRecipe(
  runId: string,
  host: string,
  agentPid: number,
  logs: { stdout: string; stderr: string },
): Relaunch {
  const ppid = Number(/^PPid:\s+(\d+)/m.exec(readStatus(agentPid))?.[1] ?? 0);
  if (exeName(ppid) !== 'nsenter') throw new Error(`the agent on ${host} is not under nsenter`);
  return { argv: cmdline(ppid), env: envOf(ppid), cgroup: names.cgroup(runId, host), ...logs };
}

function readStatus(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return '';
  }
}

/** Start `p` again from its recipe, detached; resolves with its new record once it runs. */
export async function relaunch(p: LocalProcess & { relaunch: Relaunch }): Promise<LocalProcess> {
  const r = p.relaunch;
  const out = openSync(r.stdout, 'a');
  const err = openSync(r.stderr, 'a');
  let child;
  try {
    child =
      r.cgroup === undefined
        ? spawn(r.argv[0]!, r.argv.slice(1), {
            detached: true,
            stdio: ['ignore', out, err],
            env: r.env,
          })
        : spawn('/bin/sh', ['-c', JOIN_HOST_CGROUPS, 'sh', r.cgroup, ...r.argv.slice(1)], {
            detached: true,
            stdio: ['ignore', out, err, 'pipe'],
            env: r.env,
          });
  } finally {
    closeSync(out);
    closeSync(err);
  }
  child.on('error', () => {});
  const launcher = child.pid ?? 0;
  let pid = launcher;
  if (r.cgroup !== undefined) {
    // The command waits at a gate (fd 3) until its PID is known: nsenter's child.
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (exeName(launcher) === 'nsenter') {
        const c = childrenOf(launcher)[0];
        if (c !== undefined) {
          pid = c;
          break;
        }
      }
      if (child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`cannot start the ${p.role} on ${p.name} again`);
      }
      await sleep(5);
    }
    const gate = child.stdio[3] as Socket | null;
    gate?.on('error', () => {});
    gate?.end('go\n', () => gate.destroy());
  }
  child.unref();
  // Its record names the program it becomes (a gated shell execs it).
  for (let i = 0; i < 500 && exeName(pid) !== p.exe && exeName(pid) !== undefined; i++)
    await sleep(10);
  return {
    role: p.role,
    name: p.name,
    pid,
    startTime: startTime(pid) ?? 0,
    exe: exeName(pid) ?? '?',
    relaunch: r,
  };
}

/** Who a recorded process is, for a human. */
function what(p: LocalProcess): string {
  return p.role === 'agent'
    ? `the agent on ${p.name}`
    : p.role === 'nats'
      ? 'NATS'
      : `the ${p.name}`;
}

/**
 * A cluster that is up but whose agents, controller or NATS died (`dead`): start those again as
 * they were started (jobs untouched), record their new PIDs in the state file, wait until the
 * controller sees every host (`reachable` counts them). Undefined when there is nothing this can
 * mend (a dead host, a process recorded without a recipe).
 */
export async function restartDead(
  recorded: LocalClusterState,
  deadNow: readonly LocalProcess[],
  say: (line: string) => void,
  reachable: (state: LocalClusterState) => Promise<number | undefined>,
): Promise<{ state: LocalClusterState; restarted: string[] } | undefined> {
  if (deadNow.some((p) => p.role === 'host' || p.relaunch === undefined)) return;
  const hosts = recorded.hosts;
  const order: LocalProcess['role'][] = ['nats', 'controller', 'agent'];
  const dead = [...deadNow].sort((a, b) => order.indexOf(a.role) - order.indexOf(b.role));
  let state = recorded;
  const restarted: string[] = [];
  for (const p of dead) {
    say(`restarting ${what(p)} (pid ${p.pid} is gone)`);
    const next = await relaunch(p as LocalProcess & { relaunch: Relaunch });
    state = {
      ...state,
      processes: state.processes.map((x) => (x === p || sameRecord(x, p) ? next : x)),
    };
    writeLocalState(state);
    restarted.push(`${what(p)} (pid ${next.pid})`);
    if (p.role === 'nats') await natsAccepts(state);
  }
  say(`waiting until the controller sees ${hosts} host(s)`);
  const deadline = Date.now() + 90_000;
  for (;;) {
    const seen = await reachable(state);
    if (seen === hosts) break;
    if (Date.now() > deadline) {
      throw new DroverError(
        ErrorCode.Timeout,
        `restarted ${restarted.join(', ')}, but the controller saw ${seen ?? 0} of ${hosts} hosts in time (logs: ${state.logDir})`,
      );
    }
    await sleep(250);
  }
  return { state, restarted };
}

function sameRecord(a: LocalProcess, b: LocalProcess): boolean {
  return a.role === b.role && a.name === b.name && a.pid === b.pid;
}

/** Wait (≤ 20 s) until the cluster's NATS accepts a client again. */
async function natsAccepts(state: LocalClusterState): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const bus = await Bus.connect({
        servers: [state.natsUrl ?? ''],
        name: 'drover-local',
        ...(state.tls ? { tls: state.tls } : {}),
      });
      await bus.close();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(200);
    }
  }
}
