/** Helpers the testbed's own tests share: a TCP echo-hostname listener and clients for it. */
import { connect } from 'node:net';
import type { Host, HostProcess } from '@drover/local-cluster';

/** A Node one-liner serving the host's hostname on `<address>:<port>` and printing `ready`. */
const LISTENER =
  "require('net').createServer(s=>s.end(require('os').hostname()))" +
  ".listen(+process.argv[2],process.argv[1],()=>console.log('ready'))";

/** A Node one-liner printing the first chunk `<address>:<port>` sends, or the error code (exit 2/3). */
const CLIENT =
  "const s=require('net').connect(+process.argv[2],process.argv[1]);" +
  "s.setTimeout(+process.argv[3],()=>{console.error('ETIMEDOUT');process.exit(3)});" +
  "s.on('data',c=>{process.stdout.write(c);process.exit(0)})" +
  ".on('error',e=>{console.error(e.code);process.exit(2)})";

export const PORT = 7000;

/** Start the hostname listener inside `h` and wait until it listens. */
export async function startListener(h: Host, port = PORT): Promise<HostProcess> {
  const p = await h.spawn(['node', '-e', LISTENER, h.address, String(port)], {
    name: `listener-${port}`,
  });
  await p.waitForOutput(/ready/, 10_000);
  return p;
}

/** From inside `from`, read the first chunk `address:port` sends; resolves with stdout or the error code. */
export async function readFromHost(
  from: Host,
  address: string,
  port = PORT,
  timeoutMs = 1500,
): Promise<string> {
  const r = await from.exec(['node', '-e', CLIENT, address, String(port), String(timeoutMs)]);
  return r.code === 0 ? r.stdout : `ERR ${r.stderr.trim()}`;
}

/** From the test runner, read the first chunk `address:port` sends; resolves with it or `ERR <code>`. */
export function readFromRunner(address: string, port = PORT, timeoutMs = 1500): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: address, port });
    s.setTimeout(timeoutMs, () => {
      s.destroy();
      resolve('ERR ETIMEDOUT');
    });
    s.on('data', (c) => {
      s.destroy();
      resolve(c.toString());
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(`ERR ${e.code ?? e.message}`));
  });
}
