import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  closeFd,
  isChildSubreaper,
  pidfdOpen,
  procEntry,
  setChildSubreaper,
  waitForExit,
  type ProcEntry,
} from '@drover/native';
import { Criu, findPageServer } from './criu.js';

const entry = (pid: number, cmdline: string[], state = 'S'): ProcEntry => ({
  pid,
  nspid: [pid],
  state,
  ppid: 1,
  uid: 0,
  cmdline,
});

test('the page server is known among our children by its title, address and port', () => {
  const title = 'criu: page-server --rpc --address 10.77.0.12 --port 7200';
  const children = [
    null, // gone while we looked
    entry(10, ['node', 'agent.js']),
    entry(11, ['criu: page-server --rpc --address 10.77.0.12 --port 72001']),
    entry(12, ['criu: page-server --rpc --address 10.77.0.11 --port 7200']),
    entry(13, [], 'Z'), // an earlier one, exited, not reaped yet
    entry(14, [title]),
  ];
  assert.equal(findPageServer(children, '10.77.0.12', 7200), 14);
  assert.equal(findPageServer(children, '10.77.0.12', 7201), null);
  // A title CRIU pads is still its title.
  assert.equal(findPageServer([entry(15, [title, '', ''])], '10.77.0.12', 7200), 15);
  assert.equal(findPageServer([entry(16, [`${title} x`])], '10.77.0.12', 7200), 16);
});

const CRIU = '/usr/local/sbin/criu';
const dir = mkdtempSync(join(tmpdir(), 'drover-criu-ps-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

test(
  'a page server CRIU started answers with its real PID, our child to reap',
  { skip: (process.getuid?.() !== 0 || !existsSync(CRIU)) && 'needs root and CRIU' },
  async () => {
    const was = isChildSubreaper();
    setChildSubreaper(true); // as the agent is: the orphaned daemon comes to us
    try {
      const port = await freePort();
      const h = await new Criu({ criuPath: CRIU }).pageServer({
        imagesDir: dir,
        address: '127.0.0.1',
        port,
      });
      assert.ok(h.pid !== null && h.pid > 0, `pid ${h.pid}`);
      const e = procEntry(h.pid);
      assert.equal(e?.ppid, process.pid);
      const fd = pidfdOpen(h.pid);
      try {
        process.kill(h.pid, 'SIGKILL');
        const st = await waitForExit(fd);
        assert.equal(st.signal, 'SIGKILL');
      } finally {
        closeFd(fd);
      }
      assert.equal(procEntry(h.pid), null, 'reaped');
    } finally {
      setChildSubreaper(was);
    }
  },
);
