/** Tests of a job's network helpers that need no bridge: what a dump would find in flight. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { jobNetworkFor, inFlightConnections } from './job-network.js';

test('a job network record follows from the run request; absent means the host network', () => {
  assert.deepEqual(jobNetworkFor(undefined), { mode: 'host' });
  assert.deepEqual(
    jobNetworkFor({ address: '10.78.5.2', prefixLength: 24, gateway: '10.78.5.1' }),
    {
      mode: 'job',
      address: '10.78.5.2',
      prefixLength: 24,
      gateway: '10.78.5.1',
      mac: '02:44:0a:4e:05:02',
    },
  );
});

// A listener that never accepts, in a network namespace of its own: 3 completed handshakes wait
// in its queue, which is what a dump would find in flight.
const SCRIPT = `
import socket, sys, time
ls = socket.socket(); ls.bind(('127.0.0.1', 0)); ls.listen(8)
cs = [socket.create_connection(ls.getsockname()) for _ in range(3)]
print('ready', flush=True)
time.sleep(60)
`;

test("connections waiting in a listener's accept queue count as in flight", async () => {
  const child = spawn(
    'unshare',
    ['--net', '/bin/sh', '-c', 'ip link set lo up && exec /usr/bin/python3 -c "$0"', SCRIPT],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      child.once('exit', (c) => reject(new Error(`exited ${c}`)));
    });
    assert.equal(await inFlightConnections(child.pid!), 3);
  } finally {
    child.kill('SIGKILL');
  }
  assert.equal(await inFlightConnections(2 ** 22 + 7), 0, 'a process that is gone has none');
});
