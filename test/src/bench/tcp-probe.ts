#!/usr/bin/env node
/**
 * Raw TCP throughput between two testbed hosts, the link baseline of the migration bench.
 *   tcp-probe sink ADDRESS PORT          accept one connection, count bytes until EOF, answer the
 *                                        count, exit
 *   tcp-probe send ADDRESS PORT BYTES    send BYTES in 4 MiB writes; print {"bytes","ms"} once
 *                                        the sink has answered (everything arrived)
 */
import net from 'node:net';

const [mode, address, portText, bytesText] = process.argv.slice(2);
const port = Number(portText);

if (mode === 'sink') {
  const server = net.createServer((sock) => {
    let n = 0;
    sock.on('data', (d: Buffer) => (n += d.length));
    sock.on('end', () => {
      sock.end(String(n));
      server.close();
    });
  });
  server.listen(port, address, () => process.stdout.write('listening\n'));
} else if (mode === 'send') {
  const total = Number(bytesText);
  const chunk = Buffer.alloc(4 * 1024 * 1024, 0x5a);
  const sock = net.connect({ host: address!, port });
  let t0 = 0;
  let answer = '';
  sock.on('connect', () => {
    t0 = performance.now();
    let sent = 0;
    const pump = (): void => {
      while (sent < total) {
        const n = Math.min(chunk.length, total - sent);
        sent += n;
        if (!sock.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          sock.once('drain', pump);
          return;
        }
      }
      sock.end();
    };
    pump();
  });
  sock.on('data', (d: Buffer) => (answer += d.toString()));
  sock.on('end', () => {
    const ms = performance.now() - t0;
    process.stdout.write(JSON.stringify({ bytes: Number(answer), ms }) + '\n');
  });
} else {
  process.stderr.write('usage: tcp-probe sink ADDRESS PORT | send ADDRESS PORT BYTES\n');
  process.exitCode = 2;
}
