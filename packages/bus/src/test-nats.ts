/** Test support: a real nats-server with JetStream on a free loopback port (not exported). */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus, type BusOptions } from './connection.js';

/** Resolves once 127.0.0.1:`port` accepts a TCP connection (10 s at most). */
async function waitAccepts(port: number): Promise<void> {
  for (let i = 0; ; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (i > 200) throw new Error(`nothing listens on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** A running test server and a connection to it. */
export interface TestNats {
  url: string;
  bus: Bus;
  /** SIGKILL the server (by PID), wait `downMs`, start it again on the same port and store. */
  crash(downMs: number): Promise<void>;
  /** Close the connection, kill the server (by PID), remove its store. */
  stop(): Promise<void>;
}

/** Start nats-server -js in a temp dir and connect once it answers. */
export async function startTestNats(name: string, requestTimeoutMs?: number): Promise<TestNats> {
  const dir = mkdtempSync(join(tmpdir(), `drover-${name}-`));
  const port = await freePort();
  const url = `nats://127.0.0.1:${port}`;
  const launch = (): ChildProcess =>
    spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir], {
      stdio: 'ignore',
    });
  let server = launch();
  let bus: Bus | null = null;
  for (let i = 0; bus === null; i++) {
    try {
      bus = await Bus.connect({
        servers: [url],
        name,
        ...(requestTimeoutMs ? { requestTimeoutMs } : {}),
      });
    } catch (err) {
      if (i > 100) {
        if (server.pid) process.kill(server.pid, 'SIGKILL');
        throw err;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const connected = bus;
  return {
    url,
    bus: connected,
    async crash(downMs) {
      const old = server;
      const exited = new Promise((r) => old.once('exit', r));
      if (old.pid) process.kill(old.pid, 'SIGKILL');
      await exited;
      await new Promise((r) => setTimeout(r, downMs));
      server = launch();
      await waitAccepts(port);
    },
    async stop() {
      await connected.close();
      if (server.pid) process.kill(server.pid, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** One server of a test cluster. */
export interface TestClusterServer {
  name: string;
  url: string;
  pid(): number | undefined;
  /** SIGKILL it (a crash) and wait for the exit. */
  kill(): Promise<void>;
  /** Start it (again, with the same ports and store); resolves once it accepts clients. */
  start(): Promise<void>;
}

/** A 3-node JetStream cluster on loopback. */
export interface TestNatsCluster {
  urls: string[];
  servers: TestClusterServer[];
  /** A Bus connected to every server. */
  connect(name: string, options?: Partial<BusOptions>): Promise<Bus>;
  /** Kill every server (by PID) and remove their stores. */
  stop(): Promise<void>;
}

/** Start a 3-node JetStream cluster (R3 streams work once it has a meta leader). */
export async function startTestNatsCluster(name: string): Promise<TestNatsCluster> {
  const dir = mkdtempSync(join(tmpdir(), `drover-${name}-`));
  const ports: [number, number][] = [];
  while (ports.length < 3) {
    const pair: [number, number] = [await freePort(), await freePort()];
    if (!ports.flat().some((p) => pair.includes(p)) && pair[0] !== pair[1]) ports.push(pair);
  }
  const servers: TestClusterServer[] = ports.map(([client, route], i) => {
    const routes = ports
      .filter((_, j) => j !== i)
      .map(([, r]) => `nats-route://127.0.0.1:${r}`)
      .join(',');
    const args = [
      '-a',
      '127.0.0.1',
      '-p',
      String(client),
      '-js',
      '-sd',
      join(dir, `n${i}`),
      '-n',
      `n${i}`,
      '--cluster_name',
      name,
      '--cluster',
      `nats://127.0.0.1:${route}`,
      '--routes',
      routes,
    ];
    let child: ChildProcess | undefined;
    return {
      name: `n${i}`,
      url: `nats://127.0.0.1:${client}`,
      pid: () =>
        child && child.exitCode === null && child.signalCode === null ? child.pid : undefined,
      async start() {
        child = spawn('nats-server', args, { stdio: 'ignore' });
        await waitAccepts(client);
      },
      async kill() {
        const c = child;
        if (!c?.pid || c.exitCode !== null || c.signalCode !== null) return;
        const exited = new Promise((r) => c.once('exit', r));
        process.kill(c.pid, 'SIGKILL');
        await exited;
      },
    };
  });
  await Promise.all(servers.map((s) => s.start()));
  const urls = servers.map((s) => s.url);
  const buses: Bus[] = [];
  const cluster: TestNatsCluster = {
    urls,
    servers,
    async connect(who, options = {}) {
      for (let i = 0; ; i++) {
        try {
          const bus = await Bus.connect({ servers: urls, name: who, ...options });
          buses.push(bus);
          return bus;
        } catch (err) {
          if (i > 100) throw err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    },
    async stop() {
      await Promise.all(buses.map((b) => b.close().catch(() => undefined)));
      await Promise.all(servers.map((s) => s.kill()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return cluster;
}
