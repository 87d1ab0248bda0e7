/**
 * CRIU over RPC end to end: a real process tree (a counter loop with a child, and a listening TCP
 * socket) dumped, restored with the same PIDs, left running, left stopped, and a PID clash.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Criu, CriuError, findCriu } from '@drover/criu';
import {
  childrenOf,
  findByCmdline,
  isAlive,
  killPids,
  processTree,
  sleep,
  waitFor,
  waitGone,
  type ProcInfo,
} from '../util/procfs.js';

const TREE_SH = `#!/bin/sh
# A counter loop (this shell), a long-lived child, and a listening TCP socket.
( while :; do sleep 1; done ) &
/usr/bin/python3 -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(8)
open(sys.argv[1] + "/port.tmp", "w").write(str(s.getsockname()[1]))
import os; os.rename(sys.argv[1] + "/port.tmp", sys.argv[1] + "/port")
while True:
    c, _ = s.accept()
    c.sendall(b"hello\\n")
    c.close()
' "$1" &
i=0
while :; do
  i=$((i+1))
  echo $i > "$1/counter.tmp"
  mv "$1/counter.tmp" "$1/counter"
  sleep 0.05
done
`;
import { JOB_NAMESPACE_FLAGS } from '@drover/native';

let criu: Criu;
let root: string;
const spawned: ChildProcess[] = [];
const cleanupPids = new Set<number>();

before(async () => {
  const bin = await findCriu({ pathEnv: process.env.PATH ?? '' });
  criu = new Criu({ criuPath: bin.path });
  root = mkdtempSync(join(tmpdir(), 'drover-criu-it-'));
});

after(async () => {
  killPids([...cleanupPids]);
  for (const c of spawned) if (c.exitCode === null && c.pid) killPids([c.pid]);
  await waitGone([...cleanupPids], 5000).catch(() => undefined);
  // DROVER_TEST_KEEP=1 keeps images and CRIU logs for a post-mortem.
  if (process.env.DROVER_TEST_KEEP !== '1') rmSync(root, { recursive: true, force: true });
});

/** A tree started in its own PID, UTS, IPC and mount namespaces under tini, as jobs are. */
interface Tree {
  dir: string;
  /** Host PID of the namespace's init (tini). */
  initPid: number;
}

async function startNamespacedTree(name: string): Promise<Tree> {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tree.sh'), TREE_SH, { mode: 0o755 });
  // stdio is reopened inside the new mount namespace: fds opened outside point at host mounts,
  // which CRIU cannot resolve from inside (see shared notes).
  const inner = `exec </dev/null >"${dir}/out.log" 2>&1; exec setsid tini -s -- /bin/sh "${dir}/tree.sh" "${dir}"`;
  const child = spawn('setsid', ['unshare', ...JOB_NAMESPACE_FLAGS, '--', '/bin/sh', '-c', inner], {
    stdio: 'ignore',
  });
  spawned.push(child);
  const initPid = await waitFor('namespace init', () => {
    const kids = child.pid ? childrenOf(child.pid) : [];
    return kids[0];
  });
  cleanupPids.add(initPid);
  await waitFor('port file', () => readOpt(join(dir, 'port')));
  await waitFor('counter', () => counter(dir) ?? undefined);
  return { dir, initPid };
}

function readOpt(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function counter(dir: string): number | null {
  const t = readOpt(join(dir, 'counter'));
  return t === undefined ? null : Number(t.trim());
}

/** The long-lived members of a tree by their innermost PID (transient `sleep`/`mv` excluded). */
function stableMembers(tree: ProcInfo[]): Map<number, string> {
  const out = new Map<number, string>();
  for (const p of tree) {
    if (p.cmdline[0] === 'sleep' || p.cmdline[0] === 'mv') continue;
    out.set(p.nspid.at(-1)!, p.cmdline.join(' '));
  }
  return out;
}

function hello(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let data = '';
    s.on('data', (d) => (data += d.toString()));
    s.on('end', () => resolve(data));
    s.on('error', reject);
    s.setTimeout(3000, () => s.destroy(new Error('timeout')));
  });
}

function imagesDir(name: string): string {
  const d = join(root, `${name}-img`);
  mkdirSync(d, { recursive: true });
  return d;
}

const NS_OPTS = { externals: ['mnt[]'] } as const;

describe('CRIU over RPC', () => {
  test('version, check and features', async () => {
    const v = await criu.version();
    assert.ok(v.major > 4 || (v.major === 4 && v.minor >= 2), `criu ${v.text} is older than 4.2`);
    await criu.check();
    const f = await criu.features();
    assert.equal(typeof f.lazyPages, 'boolean');
    assert.equal(typeof f.memTrack, 'boolean');
  });

  test('dump, gone, restore: same PIDs, counter continues, TCP listener back', async () => {
    const tree = await startNamespacedTree('basic');
    const port = Number(readOpt(join(tree.dir, 'port')));
    assert.equal(await hello(port), 'hello\n');

    const seen: string[] = [];
    let dumped = new Map<number, string>();
    let hostPids: number[] = [];
    const img = imagesDir('basic');
    await criu.dump(
      { pid: tree.initPid, imagesDir: img, ...NS_OPTS },
      {
        hooks: {
          'pre-dump': () => void seen.push('pre-dump'),
          // The tree is frozen here: this snapshot is exactly what the image holds.
          'post-dump': () => {
            seen.push('post-dump');
            const members = processTree(tree.initPid);
            hostPids = members.map((p) => p.pid);
            dumped = stableMembers(members);
          },
        },
      },
    );
    assert.deepEqual(seen, ['pre-dump', 'post-dump']);
    assert.ok(dumped.size >= 4, `expected tini, sh, child, listener: ${[...dumped.values()]}`);
    await waitGone(hostPids);
    const atDump = counter(tree.dir)!;
    await sleep(300);
    assert.equal(counter(tree.dir), atDump, 'counter moved while the tree was dumped');

    const restoredAt = Date.now();
    const r = await criu.restore({ imagesDir: img, root: '/', ...NS_OPTS });
    cleanupPids.add(r.pid);
    // A child caught between fork and exec looks like its parent shell (for a moment, in either
    // snapshot): every process of the restored tree must be one the dump saw, with its PID and
    // command, and the long-lived four (tini, the shell, its subshell, the listener) must be back.
    const fromDump = (m: Map<number, string>): boolean =>
      [...m].every(([pid, cmd]) => dumped.get(pid) === cmd);
    let after = stableMembers(processTree(r.pid));
    for (let i = 0; i < 50 && !fromDump(after); i++) {
      await sleep(20);
      after = stableMembers(processTree(r.pid));
    }
    assert.ok(fromDump(after), `PIDs inside changed: ${[...after]} vs ${[...dumped]}`);
    const cmds = [...after.values()];
    assert.ok(after.get(1)?.includes('tini'), `no tini as PID 1: ${cmds}`);
    assert.ok(
      cmds.some((c) => c.includes('python3')),
      `no listener: ${cmds}`,
    );
    assert.ok(cmds.filter((c) => c.includes('tree.sh')).length >= 2, `no shell pair: ${cmds}`);

    const next = await waitFor('counter to move', () => {
      const c = counter(tree.dir)!;
      return c > atDump ? c : undefined;
    });
    const elapsedSteps = Math.ceil((Date.now() - restoredAt) / 50) + 20;
    assert.ok(next <= atDump + elapsedSteps, `counter jumped from ${atDump} to ${next}`);
    assert.equal(await hello(port), 'hello\n');
    killPids([r.pid]);
    await waitGone([r.pid]);
  });

  test('leave-running: the tree never stops and the image restores', async () => {
    const tree = await startNamespacedTree('leave-running');
    const pids = processTree(tree.initPid).map((p) => p.pid);
    const img = imagesDir('leave-running');
    let atDump = -1;
    await criu.dump(
      { pid: tree.initPid, imagesDir: img, leaveRunning: true, ...NS_OPTS },
      { hooks: { 'post-dump': () => void (atDump = counter(tree.dir)!) } },
    );
    assert.ok(atDump > 0);
    assert.ok(isAlive(tree.initPid), 'init died despite leave-running');
    const moved = await waitFor('counter after dump', () => {
      const c = counter(tree.dir)!;
      return c > atDump + 5 ? c : undefined;
    });
    killPids([tree.initPid]);
    await waitGone(pids);
    const atKill = counter(tree.dir)!;
    assert.ok(atKill >= moved);

    const r = await criu.restore({ imagesDir: img, root: '/', ...NS_OPTS });
    cleanupPids.add(r.pid);
    // The restored shell continues from the dumped value, below what the original reached.
    const first = await waitFor('restored counter', () => {
      const c = counter(tree.dir)!;
      return c !== atKill ? c : undefined;
    });
    assert.ok(
      first > atDump && first < atKill,
      `restored counter ${first} not in (${atDump}, ${atKill})`,
    );
    killPids([r.pid]);
    await waitGone([r.pid]);
  });

  test('leave-stopped restore, then resume', async () => {
    const tree = await startNamespacedTree('leave-stopped');
    const img = imagesDir('leave-stopped');
    await criu.dump({ pid: tree.initPid, imagesDir: img, ...NS_OPTS });
    const atDump = counter(tree.dir)!;
    const r = await criu.restore({ imagesDir: img, root: '/', leaveStopped: true, ...NS_OPTS });
    cleanupPids.add(r.pid);
    const members = processTree(r.pid);
    assert.ok(members.length >= 4);
    // CRIU stops each task as its last restore step; wait until every one reports it. Each stops
    // when the scheduler next runs it, which a loaded machine may delay: the wait is generous,
    // and a timeout names the states seen last.
    let seen = '';
    await waitFor(
      'every task stopped',
      () => {
        const tasks = processTree(r.pid);
        seen = tasks.map((p) => `${p.pid}:${p.state}`).join(' ');
        // A zombie stays one: a child that had exited but was not yet reaped at the dump.
        return tasks.every((p) => p.state === 'T' || p.state === 'Z') ? true : undefined;
      },
      15_000,
    ).catch((e: unknown) => {
      throw new Error(`${(e as Error).message}; last seen ${seen}`);
    });
    await sleep(300);
    assert.equal(counter(tree.dir), atDump, 'counter moved while left stopped');
    killPids(
      members.map((p) => p.pid),
      'SIGCONT',
    );
    await waitFor('counter to resume', () => (counter(tree.dir)! > atDump ? true : undefined));
    killPids([r.pid]);
    await waitGone([r.pid]);
  });

  test('a restore whose PID is taken fails with a CriuError naming it; nothing is left', async () => {
    // A plain subtree in this PID namespace (as `adopt` takes), dumped with leave-running: its
    // PIDs are still in use when the restore runs.
    const dir = join(root, 'taken');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'tree.sh'), TREE_SH, { mode: 0o755 });
    const child = spawn('setsid', ['/bin/sh', join(dir, 'tree.sh'), dir], { stdio: 'ignore' });
    spawned.push(child);
    const rootPid = child.pid!;
    cleanupPids.add(rootPid);
    await waitFor('port file', () => readOpt(join(dir, 'port')));
    const members = processTree(rootPid);
    for (const p of members) cleanupPids.add(p.pid);
    const img = imagesDir('taken');
    await criu.dump({ pid: rootPid, imagesDir: img, leaveRunning: true });
    const beforeRestore = processTree(rootPid)
      .map((p) => p.pid)
      .sort();

    const err = await criu.restore({ imagesDir: img }).then(
      () => assert.fail('restore succeeded although its PIDs are taken'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof CriuError, `not a CriuError: ${String(err)}`);
    assert.equal(err.request, 'RESTORE');
    assert.ok(err.logTail.length > 0, 'no log tail');
    assert.ok(err.logPath?.startsWith(img));
    const text = [err.message, ...err.logTail].join('\n');
    assert.ok(
      members.some((p) => text.includes(String(p.pid))),
      `error does not name a taken PID: ${err.message}`,
    );
    // Nothing left behind: every process of this tree is one of the originals or a passing
    // child of one (the loop's `mv`), all originals still alive.
    await sleep(200);
    const originals = new Set(beforeRestore);
    const strays = findByCmdline(dir).filter(
      (p) => !originals.has(p.pid) && !originals.has(p.ppid),
    );
    assert.deepEqual(
      strays.map((p) => `${p.pid} (${p.cmdline.join(' ')})`),
      [],
      'a restored process was left behind',
    );
    // The loop's own `sleep` and `mv` (and the shell's forks before they exec) come and go; the
    // shells and the listener live on: those seen both before and after the dump.
    const lasting = members.filter(
      (m) => originals.has(m.pid) && !['sleep', 'mv'].includes(m.cmdline[0] ?? ''),
    );
    assert.ok(lasting.some((m) => m.cmdline[0] === '/usr/bin/python3'));
    for (const p of lasting) assert.ok(isAlive(p.pid), `${p.pid} (${p.cmdline.join(' ')}) died`);
    killPids(processTree(rootPid).map((p) => p.pid));
  });
});
