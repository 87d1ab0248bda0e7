/** Tests for preflight against real process trees (python3 workloads), a private netns, and a fake destination. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomInt } from 'node:crypto';
import type { PreflightReason } from '@drover/protocol';
import {
  cpuFlags,
  hostAddresses,
  jobFiles,
  preflight,
  type DestinationFacts,
  type PreflightInput,
} from './preflight.js';
import { parseHexAddress, parseSsUnix } from './preflight-net.js';
import { selfHasCapability } from './proc-scan.js';

const PY = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const dir = mkdtempSync(join(tmpdir(), 'drover-preflight-'));
const groups: number[] = []; // process groups this file spawned (each job is a group leader)

/** A python3 job: `code` runs, then `ready()` is called and it sleeps. argv[1] is the ready file. */
async function job(
  code: string,
  opts: { pre?: string; argv?: string[] } = {},
): Promise<{ pid: number; info: string }> {
  const readyFile = join(dir, `ready-${randomInt(1e9)}`);
  const script =
    'import os, sys, socket, time, mmap\n' +
    "def ready(s=''):\n  open(sys.argv[1] + '.tmp', 'w').write(str(s)); os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n" +
    `${code}\nready(globals().get('INFO', ''))\ntime.sleep(600)\n`;
  const child = spawnLogged([
    ...(opts.pre === undefined ? [] : opts.pre.split(' ')),
    PY,
    '-c',
    script,
    readyFile,
    ...(opts.argv ?? []),
  ]);
  const info = await waitFile(readyFile, child);
  return { pid: child.pid as number, info };
}

/** Spawn `argv` detached (its own process group), stdio to /dev/null and a log file (O_APPEND). */
function spawnLogged(argv: string[], extra: { uid?: number; gid?: number } = {}): ChildProcess {
  const log = openSync(join(dir, 'jobs.log'), 'a');
  const [cmd, ...args] = argv as [string, ...string[]];
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', 'ignore', log], ...extra });
  closeSync(log);
  if (child.pid !== undefined) groups.push(child.pid);
  child.unref();
  return child;
}

async function waitFile(path: string, child: ChildProcess): Promise<string> {
  for (let i = 0; i < 400; i++) {
    if (existsSync(path)) return readFileSync(path, 'utf8');
    if (child.exitCode !== null || child.signalCode !== null) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(
    `job did not get ready: ${readFileSync(join(dir, 'jobs.log'), 'utf8').slice(-2000)}`,
  );
}

function kill(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

const codes = (rs: readonly PreflightReason[]): string[] => rs.map((r) => r.code).sort();
const input = (rootPid: number): PreflightInput => ({
  jobId: 'job-test',
  rootPid,
  hostAddresses: hostAddresses(),
  jobDir: dir,
  ownNetwork: false,
});
const noFiles: DestinationFacts['checkFiles'] = async () => ({ missing: [], sizeDiffers: [] });

after(() => {
  for (const pid of groups) kill(pid);
  rmSync(dir, { recursive: true, force: true });
});

describe('address and ss parsing', () => {
  test('hex addresses from /proc/net/tcp{,6}', () => {
    assert.equal(parseHexAddress('0100007F'), '127.0.0.1');
    assert.equal(parseHexAddress('0201E70A'), '10.231.1.2');
    assert.equal(parseHexAddress('00000000000000000000000001000000'), '::1');
    assert.equal(parseHexAddress('0000000000000000FFFF00000100007F'), '127.0.0.1');
    assert.equal(parseHexAddress('B80D01200000000000000000010000FE'), '2001:db8::fe00:1');
  });
  test('ss -xanH rows, paths with spaces', () => {
    const rows = parseSsUnix(
      'u_str LISTEN 1      128    /tmp/pf test.sock 483798 * 0     \n' +
        'u_dgr ESTAB  0      0                      * 483802 * 483801\n',
    );
    assert.deepEqual(rows, [
      {
        type: 'stream',
        state: 'LISTEN',
        recvQ: 1,
        address: '/tmp/pf test.sock',
        inode: 483798,
        peer: 0,
      },
      { type: 'dgram', state: 'ESTAB', recvQ: 0, address: null, inode: 483802, peer: 483801 },
    ]);
  });
});

describe('EXTERNAL_TCP to an address in a private network namespace', () => {
  const tag = `${process.pid % 10000}${randomInt(100)}`;
  const ns = `pf-${tag}`;
  const [vethA, vethB] = [`pfa${tag}`, `pfb${tag}`];
  const octet = randomInt(0, 64) * 4;
  const [here, there] = [`10.231.${octet}.1`, `10.231.${octet}.2`];
  let listener: ChildProcess | undefined;
  const ip = (...args: string[]): void => void execFileSync('ip', args, { stdio: 'ignore' });

  before(async () => {
    ip('netns', 'add', ns);
    ip('link', 'add', vethA, 'type', 'veth', 'peer', 'name', vethB);
    ip('link', 'set', vethB, 'netns', ns);
    ip('addr', 'add', `${here}/30`, 'dev', vethA);
    ip('link', 'set', vethA, 'up');
    ip('-n', ns, 'addr', 'add', `${there}/30`, 'dev', vethB);
    ip('-n', ns, 'link', 'set', vethB, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    const readyFile = join(dir, 'listener-ready');
    const code =
      `import socket,sys,os,time\ns=socket.socket(); s.bind(('${there}', 0)); s.listen()\n` +
      "open(sys.argv[1]+'.t','w').write(str(s.getsockname()[1])); os.rename(sys.argv[1]+'.t', sys.argv[1])\n" +
      'conns=[]\nwhile True: conns.append(s.accept())\n';
    listener = spawnLogged(['ip', 'netns', 'exec', ns, PY, '-c', code, readyFile]);
    await waitFile(readyFile, listener);
  });
  after(() => {
    if (listener?.pid !== undefined) kill(listener.pid);
    try {
      ip('netns', 'del', ns);
    } catch {
      /* best effort */
    }
    try {
      ip('link', 'del', vethA);
    } catch {
      /* gone with the namespace */
    }
  });

  test('a child connected to a non-loopback address is reported with the remote address', async () => {
    const port = readFileSync(join(dir, 'listener-ready'), 'utf8');
    // The connection lives in a forked child, so the tree walk is exercised too.
    const { pid, info } = await job(
      `r, w = os.pipe()\nif os.fork() == 0:\n  c = socket.create_connection(('${there}', ${port}))\n` +
        '  os.write(w, str(os.getpid()).encode()); time.sleep(600)\nINFO = os.read(r, 32).decode()\n',
    );
    const report = await preflight(input(pid));
    assert.deepEqual(codes(report.reasons), ['EXTERNAL_TCP'], JSON.stringify(report.reasons));
    const r = report.reasons[0] as PreflightReason;
    assert.equal(r.details['remote'], `${there}:${port}`);
    assert.equal(r.details['pid'], Number(info));
    assert.match(r.message, new RegExp(`${there.replaceAll('.', '\\.')}:${port}`));
    assert.equal(report.ok, false);
  });
});

describe('loopback connections', () => {
  test('a listener, a loopback connection to itself (IPv4 and IPv6) and a socketpair are ok', async () => {
    const { pid } = await job(
      "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n" +
        'if os.fork() == 0:\n  c = socket.create_connection(s.getsockname()); time.sleep(600)\n' +
        'a, _ = s.accept()\n' +
        "try:\n  s6 = socket.socket(socket.AF_INET6); s6.bind(('::1', 0)); s6.listen()\n" +
        '  c6 = socket.create_connection(s6.getsockname()[:2]); a6, _ = s6.accept()\nexcept OSError: pass\n' +
        'p1, p2 = socket.socketpair()\n',
    );
    const report = await preflight(input(pid));
    assert.deepEqual(report.reasons, []);
    assert.equal(report.ok, true);
  });

  test('a loopback connection to a process outside the tree is EXTERNAL_TCP', async () => {
    const server = await listen(
      createServer((c) => c.on('error', () => {})),
      { port: 0, host: '127.0.0.1' },
    );
    try {
      const port = (server.address() as { port: number }).port;
      const { pid } = await job(`c = socket.create_connection(('127.0.0.1', ${port}))\n`);
      const report = await preflight(input(pid));
      assert.deepEqual(codes(report.reasons), ['EXTERNAL_TCP']);
      assert.equal(report.reasons[0]?.details['remote'], `127.0.0.1:${port}`);
      assert.match(report.reasons[0]?.message ?? '', /outside the job/);
    } finally {
      server.close();
    }
  });
});

function listen(server: Server, where: { port: number; host: string } | string): Promise<Server> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(where, () => resolve(server));
  });
}

describe('UNIX sockets', () => {
  test('a connection to a listener outside the tree is EXTERNAL_UNIX_SOCKET; a socketpair is not', async () => {
    const path = join(dir, 'outside.sock');
    const server = await listen(
      createServer((c) => c.on('error', () => {})),
      path,
    );
    try {
      const { pid, info } = await job(
        `u = socket.socket(socket.AF_UNIX); u.connect('${path}')\np1, p2 = socket.socketpair()\nINFO = u.fileno()\n`,
      );
      const report = await preflight(input(pid));
      assert.deepEqual(
        codes(report.reasons),
        ['EXTERNAL_UNIX_SOCKET'],
        JSON.stringify(report.reasons),
      );
      const d = report.reasons[0]?.details ?? {};
      assert.equal(d['pid'], pid);
      assert.equal(d['fd'], Number(info));
      assert.equal(d['peerAddress'], path);
    } finally {
      server.close();
    }
  });
});

describe('DEVICE', () => {
  test('/dev/net/tun is reported, /dev/null and /dev/urandom are not', async () => {
    const { pid, info } = await job(
      "t = os.open('/dev/net/tun', os.O_RDWR)\nn = os.open('/dev/null', os.O_RDONLY)\n" +
        "u = os.open('/dev/urandom', os.O_RDONLY)\nINFO = t\n",
    );
    const report = await preflight(input(pid));
    assert.deepEqual(codes(report.reasons), ['DEVICE'], JSON.stringify(report.reasons));
    const d = report.reasons[0]?.details ?? {};
    assert.equal(d['path'], '/dev/net/tun');
    assert.equal(d['fd'], Number(info));
    assert.ok(report.files.every((f) => !f.path.startsWith('/dev/')));
  });
});

describe('files and the destination', () => {
  test('jobFiles sizes fds and mappings, with null for O_APPEND; missing and resized files are reported', async () => {
    const [data, log, mapped] = ['data.bin', 'append.log', 'mapped.bin'].map((n) =>
      join(dir, n),
    ) as [string, string, string];
    writeFileSync(data, '0123456789');
    writeFileSync(log, 'hello');
    writeFileSync(mapped, Buffer.alloc(8192, 1));
    const { pid } = await job(
      `d = open('${data}', 'r+b')\nl = open('${log}', 'ab')\n` +
        `mf = open('${mapped}', 'rb'); m = mmap.mmap(mf.fileno(), 0, prot=mmap.PROT_READ); mf.close()\n`,
    );
    const files = await jobFiles(pid);
    const byPath = new Map(files.map((f) => [f.path, f]));
    assert.deepEqual(byPath.get(data), { path: data, size: 10, append: false });
    assert.deepEqual(byPath.get(log), { path: log, size: null, append: true });
    assert.deepEqual(byPath.get(mapped), { path: mapped, size: 8192, append: false });
    assert.ok(
      files.every((f) => !f.path.startsWith('/usr/') && !f.path.startsWith('/proc/')),
      JSON.stringify(files),
    );

    let asked: { path: string; size?: number }[] = [];
    const destination: DestinationFacts = {
      host: 'dest-1',
      cpuFlags: await cpuFlags(),
      checkFiles: async (list) => {
        asked = list;
        return { missing: [data], sizeDiffers: [{ path: mapped, expected: 8192, actual: 1 }] };
      },
    };
    const report = await preflight(input(pid), destination);
    assert.deepEqual(codes(report.reasons), [
      'FILE_MISSING_ON_DESTINATION',
      'FILE_SIZE_DIFFERS_ON_DESTINATION',
    ]);
    const missing = report.reasons.find((r) => r.code === 'FILE_MISSING_ON_DESTINATION');
    assert.deepEqual(missing?.details['paths'], [data]);
    assert.match(missing?.message ?? '', /data\.bin/);
    const differs = report.reasons.find((r) => r.code === 'FILE_SIZE_DIFFERS_ON_DESTINATION');
    assert.deepEqual(differs?.details['paths'], [mapped]);
    assert.deepEqual(
      asked.find((f) => f.path === log),
      { path: log },
    );
    assert.deepEqual(
      asked.find((f) => f.path === data),
      { path: data, size: 10 },
    );
    assert.deepEqual(
      report.files.find((f) => f.path === log),
      { path: log, size: null },
    );
  });

  test('CPU flags the destination lacks are listed; kernel-only flags are not', async () => {
    const mine = await cpuFlags();
    assert.ok(
      mine.length > 10 && mine.every((f, i) => i === 0 || (mine[i - 1] as string) < f),
      'sorted flags',
    );
    const dropped = ['sse2', 'avx2', 'aes'].filter((f) => mine.includes(f)).slice(0, 2);
    assert.ok(dropped.length > 0);
    const ignored = ['hypervisor', 'constant_tsc', 'tsc_deadline_timer'].filter((f) =>
      mine.includes(f),
    );
    const { pid } = await job('');
    const report = await preflight(input(pid), {
      host: 'dest-2',
      cpuFlags: mine.filter((f) => !dropped.includes(f) && !ignored.includes(f)),
      checkFiles: noFiles,
    });
    assert.deepEqual(codes(report.reasons), ['CPU_FEATURES_MISSING']);
    assert.deepEqual(report.reasons[0]?.details['flags'], [...dropped].sort());
    assert.match(report.reasons[0]?.message ?? '', /dest-2/);
  });
});

describe('NON_ROOT_UID and NOT_RUNNING', () => {
  test('a process running as uid 65534 is reported (when root lacks CAP_SYS_RESOURCE)', async () => {
    const child = spawnLogged(['/usr/bin/sleep', '600'], { uid: 65534, gid: 65534 });
    const rootChild = spawnLogged(['/usr/bin/sleep', '600']);
    await new Promise((r) => setTimeout(r, 100));
    const expect = (await selfHasCapability(24)) ? [] : ['NON_ROOT_UID'];
    const report = await preflight(input(child.pid as number));
    assert.deepEqual(codes(report.reasons), expect);
    if (expect.length > 0) {
      assert.equal(report.reasons[0]?.details['pid'], child.pid);
      assert.match(report.reasons[0]?.message ?? '', /CAP_SYS_RESOURCE.*rlimit/);
    }
    assert.deepEqual((await preflight(input(rootChild.pid as number))).reasons, []);
  });

  test('a PID that is gone, or a zombie, is NOT_RUNNING', async () => {
    const gone = spawn('/usr/bin/true');
    await new Promise((r) => gone.once('exit', r));
    const report = await preflight(input(gone.pid as number));
    assert.deepEqual(codes(report.reasons), ['NOT_RUNNING']);
    assert.equal(report.ok, false);

    const { info } = await job(
      'z = os.fork()\nif z == 0: os._exit(0)\ntime.sleep(0.2)\nINFO = z\n',
    );
    const zombie = await preflight(input(Number(info)));
    assert.deepEqual(codes(zombie.reasons), ['NOT_RUNNING']);
    assert.equal(zombie.reasons[0]?.details['state'], 'Z');
  });
});
