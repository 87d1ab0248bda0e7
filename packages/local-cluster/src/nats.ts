/**
 * NATS inside a testbed: one JetStream server on the bridge, or an R3 cluster on h1..h3. In a
 * secure testbed every server requires client TLS and the generated authorization, and the
 * cluster's routes require TLS with a route certificate of the run's CA.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { jetStreamAnswers } from '@drover/bus';
import type { Host, HostProcess, ProcessExit } from './host.js';
import type { TestbedCerts } from './security.js';
import { natsServerBin } from './nats-bin.js';
import { killChecked, startTime, waitFor, type OwnedProcess } from './proc.js';

/** How NATS runs in a testbed. */
export const NatsMode = { none: 'none', single: 'single', cluster: 'cluster' } as const;
export type NatsMode = (typeof NatsMode)[keyof typeof NatsMode];

/** What NATS needs from the testbed (structurally a `Testbed`). */
export interface NatsContext {
  readonly runId: string;
  readonly runDir: string;
  readonly logDir: string;
  readonly bridgeAddress: string;
  readonly hosts: readonly Host[];
  readonly owned: OwnedProcess[];
  /** Register a child process handle (released when the run is detached). */
  track(child: ChildProcess): void;
  /** With certificates, NATS requires TLS and holds every identity to its role. */
  readonly certs?: TestbedCerts | undefined;
}

/** One nats-server of the testbed. */
export interface NatsServer {
  /** `bridge` for the single server, else the host name. */
  readonly name: string;
  /** nats://address:4222 */
  readonly url: string;
  /** http://address:8222 (monitoring: /varz, /jsz, /healthz). */
  readonly monitorUrl: string;
  /** The host it runs in (undefined for the single server in the root namespace). */
  readonly host: Host | undefined;
  /** Root-namespace PID of the current process, if running. */
  pid(): number | undefined;
  /** stdout and stderr log files (appended across restarts). */
  readonly logPaths: readonly string[];
  /** SIGTERM and wait for exit (SIGKILL after 5 s). */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit: a crash. */
  kill(): Promise<void>;
  /** Start again with the same config and storage; resolves when JetStream answers through it. */
  restart(): Promise<void>;
}

/** NATS as started by `Testbed.startNats`. */
export interface NatsService {
  readonly mode: Exclude<NatsMode, 'none'>;
  /** True when TLS and the generated authorization are required (a secure testbed). */
  readonly secure: boolean;
  readonly servers: readonly NatsServer[];
  /** Client URLs of all servers. */
  readonly urls: readonly string[];
  /** Resolves when every running server accepts clients and JetStream answers through it. */
  waitReady(timeoutMs?: number): Promise<void>;
  /** Stop every server (used by teardown). */
  stopAll(): Promise<void>;
}

/** The ports every testbed nats-server listens on (clients, routes, monitoring). */
export const NATS_PORTS = { client: 4222, route: 6222, monitor: 8222 } as const;
const CLIENT_PORT = NATS_PORTS.client;
const CLUSTER_PORT = NATS_PORTS.route;
const MONITOR_PORT = NATS_PORTS.monitor;

interface Running {
  pid: number;
  exited: Promise<ProcessExit>;
  signal(sig: NodeJS.Signals): boolean;
}

function conf(lines: Record<string, string>, blocks: string): string {
  return (
    Object.entries(lines)
      .map(([k, v]) => `${k}: ${v}`)
      .join('\n') +
    '\n' +
    blocks
  );
}

/**
 * JetStream storage limits of every testbed server; `maxFileStoreBytes` default 2 GiB (the
 * event log reserves 1 GiB, the audit stream 256 MiB, image sets use the rest).
 */
export interface NatsOptions {
  maxFileStoreBytes?: number;
}

function limits(o: NatsOptions): string {
  return `max_memory_store: 268435456\n  max_file_store: ${o.maxFileStoreBytes ?? 2 * 1073741824}`;
}

/** Build a server handle around a `launch` function that starts the process. */
function server(
  name: string,
  address: string,
  host: Host | undefined,
  logPaths: string[],
  launch: () => Promise<Running>,
  probe: (url: string) => Promise<true>,
): NatsServer & { start(): Promise<void> } {
  let cur: Running | undefined;
  const url = `nats://${address}:${CLIENT_PORT}`;
  const end = async (sig: NodeJS.Signals): Promise<void> => {
    const r = cur;
    if (!r) return;
    r.signal(sig);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((res) => (timer = setTimeout(() => res('late'), 5000)));
    if ((await Promise.race([r.exited, late])) === 'late') {
      r.signal('SIGKILL');
      await r.exited;
    }
    clearTimeout(timer);
    cur = undefined;
  };
  const start = async (): Promise<void> => {
    if (cur) throw new Error(`nats-server ${name} is already running`);
    cur = await launch();
    const r = cur;
    void r.exited.then(() => {
      if (cur === r) cur = undefined;
    });
  };
  return {
    name,
    url,
    monitorUrl: `http://${address}:${MONITOR_PORT}`,
    host,
    logPaths,
    pid: () => cur?.pid,
    stop: () => end('SIGTERM'),
    kill: () => end('SIGKILL'),
    start,
    restart: async () => {
      await start();
      await waitFor(`JetStream through ${url}`, () => probe(url), 20_000, 100);
    },
  };
}

/**
 * The single server runs in the root namespace bound to the bridge address: every host and the
 * test runner reach it, and it survives `kill()` or `cutLink()` of any host (a cut host loses the
 * bus exactly like a partitioned machine would), so failure tests don't take the bus down with them.
 */
function singleServer(ctx: NatsContext, o: NatsOptions): NatsServer & { start(): Promise<void> } {
  const dir = join(ctx.runDir, 'nats');
  const logDir = join(ctx.logDir, 'nats');
  mkdirSync(dir, { recursive: true });
  mkdirSync(logDir, { recursive: true });
  const a = ctx.bridgeAddress;
  const confPath = join(dir, 'nats.conf');
  writeFileSync(
    confPath,
    conf(
      {
        server_name: `"${ctx.runId}-nats"`,
        listen: `"${a}:${CLIENT_PORT}"`,
        http: `"${a}:${MONITOR_PORT}"`,
      },
      `jetstream {\n  store_dir: "${join(dir, 'js')}"\n  ${limits(o)}\n}\n` +
        (ctx.certs?.natsConfig ?? ''),
    ),
  );
  const logPaths = [join(logDir, 'bridge.stdout.log'), join(logDir, 'bridge.stderr.log')];
  return server(
    'bridge',
    a,
    undefined,
    logPaths,
    async () => {
      const bin = await natsServerBin();
      const out = openSync(logPaths[0] ?? '', 'a');
      const err = openSync(logPaths[1] ?? '', 'a');
      let child: ChildProcess;
      try {
        // detached (setsid), like the hosts: a Ctrl-C on the runner's terminal reaches the exit
        // handlers, not the server, and a detached run (drover up) keeps it after the runner exits.
        child = spawn(bin.path, ['-c', confPath], {
          detached: true,
          stdio: ['ignore', out, err],
          env: { PATH: process.env.PATH ?? '', DROVER_TESTBED_RUN: ctx.runId },
        });
      } finally {
        closeSync(out);
        closeSync(err);
      }
      child.on('error', () => {});
      ctx.track(child);
      const pid = child.pid ?? 0;
      const exited = new Promise<ProcessExit>((res) =>
        child.once('exit', (code, signal) => res({ code, signal })),
      );
      const owned: OwnedProcess = { pid, startTime: startTime(pid), exe: ['nats-server'] };
      ctx.owned.push(owned);
      void exited.then(() => ctx.owned.splice(ctx.owned.indexOf(owned), 1));
      return { pid, exited, signal: (sig) => killChecked(pid, sig, { exe: ['nats-server'] }) };
    },
    probeOf(ctx),
  );
}

/** How to check that JetStream answers through a server (as the runner, when secure). */
function probeOf(ctx: NatsContext): (url: string) => Promise<true> {
  const tls = ctx.certs?.runner;
  return (url) => jetStreamAnswers(url, 1000, tls);
}

/**
 * One member of the R3 cluster, inside host `h`, storage under the host's /srv. `secureConfig`
 * is the node's generated config (client TLS, authorization, TLS-only routes) in a secure
 * testbed; without it the routes are plain.
 */
function clusterServer(
  ctx: NatsContext,
  h: Host,
  peers: readonly Host[],
  o: NatsOptions,
  secureConfig: string | undefined,
): NatsServer & { start(): Promise<void> } {
  mkdirSync(join(h.stateDir, 'nats'), { recursive: true });
  const routes = peers
    .filter((p) => p !== h)
    .map((p) => `"nats-route://${p.address}:${CLUSTER_PORT}"`);
  writeFileSync(
    join(h.stateDir, 'nats', 'nats.conf'),
    conf(
      {
        server_name: `"${h.name}"`,
        listen: `"${h.address}:${CLIENT_PORT}"`,
        http: `"${h.address}:${MONITOR_PORT}"`,
      },
      `jetstream {\n  store_dir: "/srv/nats/js"\n  ${limits(o)}\n}\n` +
        (secureConfig ??
          `cluster {\n  name: "${ctx.runId}"\n  listen: "${h.address}:${CLUSTER_PORT}"\n  routes: [${routes.join(', ')}]\n}\n`),
    ),
    { mode: 0o600 },
  );
  const logPaths = [
    join(ctx.logDir, h.name, 'nats-server.stdout.log'),
    join(ctx.logDir, h.name, 'nats-server.stderr.log'),
  ];
  return server(
    h.name,
    h.address,
    h,
    logPaths,
    async () => {
      const bin = await natsServerBin();
      const p: HostProcess = await h.spawn([bin.path, '-c', '/srv/nats/nats.conf'], {
        name: 'nats-server',
      });
      return { pid: p.pid, exited: p.exited, signal: (sig) => p.kill(sig) };
    },
    probeOf(ctx),
  );
}

/** Start NATS in the testbed and wait until JetStream answers through every server. */
export async function startNats(
  ctx: NatsContext,
  mode: Exclude<NatsMode, 'none'>,
  o: NatsOptions = {},
): Promise<NatsService> {
  let servers: (NatsServer & { start(): Promise<void> })[];
  const probe = probeOf(ctx);
  if (mode === 'single') {
    servers = [singleServer(ctx, o)];
  } else {
    const members = ctx.hosts.slice(0, 3);
    if (members.length < 3)
      throw new Error(`a NATS cluster needs 3 hosts, the testbed has ${ctx.hosts.length}`);
    const secure = await ctx.certs?.natsCluster(
      ctx.runId,
      members.map((h) => ({ name: h.name, address: h.address })),
      CLUSTER_PORT,
    );
    servers = members.map((h) => clusterServer(ctx, h, members, o, secure?.get(h.name)));
  }
  const svc: NatsService = {
    mode,
    secure: ctx.certs !== undefined,
    servers,
    urls: servers.map((s) => s.url),
    waitReady: async (timeoutMs = 20_000) => {
      await Promise.all(
        servers
          .filter((s) => s.pid() !== undefined)
          .map((s) => waitFor(`JetStream through ${s.url}`, () => probe(s.url), timeoutMs, 100)),
      );
    },
    stopAll: async () => {
      await Promise.all(servers.map((s) => s.kill()));
    },
  };
  try {
    await Promise.all(servers.map((s) => s.start()));
    await svc.waitReady();
  } catch (err) {
    await svc.stopAll().catch(() => {});
    throw err;
  }
  return svc;
}
