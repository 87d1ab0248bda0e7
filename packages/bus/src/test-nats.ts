/** Test support: a real nats-server with JetStream on a free loopback port (not exported). */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus } from './connection.js';

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
  /** Close the connection, kill the server (by PID), remove its store. */
  stop(): Promise<void>;
}

/** Start nats-server -js in a temp dir and connect once it answers. */
export async function startTestNats(name: string, requestTimeoutMs?: number): Promise<TestNats> {
  const dir = mkdtempSync(join(tmpdir(), `drover-${name}-`));
  const port = await freePort();
  const url = `nats://127.0.0.1:${port}`;
  const server: ChildProcess = spawn(
    'nats-server',
    ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir],
    {
      stdio: 'ignore',
    },
  );
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
    async stop() {
      await connected.close();
      if (server.pid) process.kill(server.pid, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
