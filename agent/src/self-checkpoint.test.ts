/** Tests of self-checkpoint: the socket protocol with a fake checkpoint, then a real job dumped and restored by CRIU. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createConnection, createServer, type Socket } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { DroverError, ErrorCode, isDroverError, newId } from '@drover/common';
import type { ImageInfo } from '@drover/protocol';
import { Criu, findCriu } from '@drover/criu';
import {
  SelfCheckpointServer,
  requestSelfCheckpoint,
  type SelfCheckpointServerOptions,
} from './self-checkpoint.js';
import { JOB_NAMESPACE_FLAGS } from '@drover/native';

const CLI = fileURLToPath(new URL('./self-checkpoint-cli.js', import.meta.url));

function fakeImage(imageId = newId('img')): ImageInfo {
  const now = new Date().toISOString();
  return {
    imageId,
    jobId: 'job-t',
    host: 'h',
    dir: '/x',
    createdAt: now,
    leaveRunning: true,
    sizeBytes: 1,
    frozenMs: 1,
    dumpMs: 1,
  };
}

/** Run `fn` against a server in a fresh job directory; always closes the server and removes the directory. */
async function withServer(
  checkpoint: SelfCheckpointServerOptions['checkpoint'],
  fn: (server: SelfCheckpointServer, jobDir: string) => Promise<void>,
  before?: (jobDir: string) => Promise<void>,
): Promise<void> {
  const jobDir = await mkdtemp(join(tmpdir(), 'drover-sc-'));
  try {
    await before?.(jobDir);
    const server = await SelfCheckpointServer.listen({ jobId: 'job-t', jobDir, checkpoint });
    try {
      await fn(server, jobDir);
    } finally {
      await server.close();
    }
  } finally {
    await rm(jobDir, { recursive: true, force: true });
  }
}

/** Send `line` raw and read one reply line; the connection stays open for the caller. */
function rawRequest(
  path: string,
  line: string | Buffer,
): Promise<{ reply: Record<string, unknown>; sock: Socket }> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path, () => sock.write(line));
    let buf = '';
    sock.on('error', reject);
    sock.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0)
        resolve({ reply: JSON.parse(buf.slice(0, nl)) as Record<string, unknown>, sock });
    });
  });
}

async function refused(path: string, line: string | Buffer): Promise<string> {
  const { reply, sock } = await rawRequest(path, line);
  sock.destroy();
  assert.equal(reply.accepted, false);
  return (reply.failure as { code: string }).code;
}

const req = (extra: Record<string, unknown> = {}): string =>
  JSON.stringify({ op: 'checkpoint', requestId: newId('r'), leaveRunning: true, ...extra }) + '\n';

test('request, accept, result: the client gets the ImageInfo; a stale socket is replaced and removed on close', async () => {
  const image = fakeImage();
  let socketPath = '';
  await withServer(
    async () => image,
    async (server, jobDir) => {
      socketPath = server.socketPath;
      assert.equal((await stat(server.socketPath)).mode & 0o777, 0o600);
      assert.deepEqual(await requestSelfCheckpoint(jobDir), image);
      const results = await readdir(join(jobDir, 'self-checkpoint'));
      assert.equal(results.length, 1);
      assert.match(results[0]!, /^[0-9a-f]+\.json$/);
    },
    async (jobDir) => {
      // A socket file left behind by a dead agent: bind elsewhere, move it into place, close.
      const stale = createServer();
      await new Promise<void>((r) => stale.listen(join(jobDir, 'tmp.sock'), r));
      await rename(join(jobDir, 'tmp.sock'), join(jobDir, 'drover.sock'));
      await new Promise<void>((r) => stale.close(() => r()));
      assert.ok((await stat(join(jobDir, 'drover.sock'))).isSocket());
    },
  );
  await assert.rejects(stat(socketPath), { code: 'ENOENT' });
});

test('malformed requests get an error reply and the server keeps serving', async () => {
  await withServer(
    async () => fakeImage('img-ok'),
    async (server, jobDir) => {
      const p = server.socketPath;
      assert.equal(await refused(p, 'not json\n'), ErrorCode.InvalidArgument);
      assert.equal(await refused(p, req({ leaveRunning: false })), ErrorCode.InvalidArgument);
      assert.equal(await refused(p, req({ extra: 1 })), ErrorCode.InvalidArgument);
      assert.equal(await refused(p, req({ op: 'restore' })), ErrorCode.InvalidArgument);
      assert.equal(await refused(p, req({ requestId: '../../etc/x' })), ErrorCode.InvalidArgument);
      assert.equal(await refused(p, Buffer.alloc(5000, 0x61)), ErrorCode.InvalidArgument);
      assert.equal(await refused(p, req() + 'more\n'), ErrorCode.InvalidArgument);
      assert.equal((await requestSelfCheckpoint(jobDir)).imageId, 'img-ok');
    },
  );
});

test('a concurrent request is refused with CGROUP_BUSY while one runs', async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let calls = 0;
  await withServer(
    async () => {
      calls += 1;
      await gate;
      return fakeImage('img-first');
    },
    async (server, jobDir) => {
      const first = requestSelfCheckpoint(jobDir);
      while (calls === 0) await sleep(5);
      assert.equal(await refused(server.socketPath, req()), ErrorCode.CgroupBusy);
      await assert.rejects(
        requestSelfCheckpoint(jobDir),
        (e) => isDroverError(e, ErrorCode.CgroupBusy) && e.retryable,
      );
      release();
      assert.equal((await first).imageId, 'img-first');
      assert.equal(calls, 1);
      await requestSelfCheckpoint(jobDir); // free again
    },
  );
});

test('the checkpoint starts only after the client has closed its connection', async () => {
  const events: string[] = [];
  await withServer(
    async () => {
      events.push('checkpoint');
      return fakeImage();
    },
    async (server, jobDir) => {
      const line = req();
      const requestId = (JSON.parse(line) as { requestId: string }).requestId;
      const { reply, sock } = await rawRequest(server.socketPath, line);
      assert.deepEqual(reply, { accepted: true, requestId });
      await sleep(300); // holding the connection: no checkpoint may start
      assert.equal(events.length, 0);
      events.push('client-closed');
      sock.destroy();
      const path = join(jobDir, 'self-checkpoint', `${requestId}.json`);
      while (!(await stat(path).catch(() => null))) await sleep(10);
      assert.deepEqual(events, ['client-closed', 'checkpoint']);
    },
  );
});

test('a failing checkpoint reaches the client as a typed error; timeouts and no agent are typed too', async () => {
  let fail = true;
  let release!: () => void;
  await withServer(
    async () => {
      if (fail)
        throw new DroverError(ErrorCode.Criu, 'dump failed: boom', { details: { logTail: ['x'] } });
      await new Promise<void>((r) => (release = r));
      return fakeImage();
    },
    async (_server, jobDir) => {
      await assert.rejects(requestSelfCheckpoint(jobDir), (e) => {
        assert.ok(isDroverError(e, ErrorCode.Criu));
        assert.equal(e.message, 'dump failed: boom');
        assert.deepEqual(e.details.logTail, ['x']);
        return true;
      });
      fail = false;
      await assert.rejects(requestSelfCheckpoint(jobDir, { timeoutMs: 200 }), (e) =>
        isDroverError(e, ErrorCode.Timeout),
      );
      release();
    },
  );
  await assert.rejects(requestSelfCheckpoint(tmpdir()), (e) =>
    isDroverError(e, ErrorCode.Unavailable),
  );
});

function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const { DROVER_JOB_DIR: _, ...base } = process.env;
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...base, ...env } },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
    );
  });
}

test('the CLI prints the image id or JSON, exits 1 on failure and 2 on bad usage', async () => {
  await withServer(
    async () => fakeImage('img-cli'),
    async (_server, jobDir) => {
      assert.deepEqual(await runCli(['--dir', jobDir]), {
        code: 0,
        stdout: 'img-cli\n',
        stderr: '',
      });
      const viaEnv = await runCli(['--json'], { DROVER_JOB_DIR: jobDir });
      assert.equal(viaEnv.code, 0);
      assert.equal((JSON.parse(viaEnv.stdout) as ImageInfo).imageId, 'img-cli');
    },
  );
  const none = await runCli(['--dir', tmpdir()]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /UNAVAILABLE/);
  assert.equal((await runCli([])).code, 2);
  assert.equal((await runCli(['--bogus'])).code, 2);
  assert.equal((await runCli(['--dir', '/x', '--timeout-ms', 'soon'])).code, 2);
});

// ---- end to end with real CRIU ----

const JOB_SCRIPT = `import { execFile } from 'node:child_process';
const [cli, dir] = process.argv.slice(2);
let n = 0;
setInterval(() => {
  n += 1;
  console.log('tick ' + n);
  if (n === 10) {
    const at = n;
    execFile(process.execPath, [cli, '--dir', dir], { env: { ...process.env, UV_USE_IO_URING: '0' } },
      (err, stdout, stderr) => console.log('self-checkpoint ' + JSON.stringify(
        { at, now: n, code: err ? err.code : 0, stdout: stdout.trim(), stderr: stderr.trim() })));
  }
}, 50);
`;

const q = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;
const ticks = (log: string): number[] =>
  [...log.matchAll(/^tick (\d+)$/gm)].map((m) => Number(m[1]));
const ckptLines = (log: string): { code: number; stdout: string }[] =>
  [...log.matchAll(/^self-checkpoint (.*)$/gm)].map(
    (m) => JSON.parse(m[1]!) as { code: number; stdout: string },
  );

async function until<T>(
  what: string,
  fn: () => Promise<T | null | undefined | false>,
  ms = 20_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** Dead or a zombie (a restored root is reparented to PID 1, which reaps late here). */
const gone = async (pid: number): Promise<boolean> =>
  !/^State:\s+[^Z]/m.test(await readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''));

test(
  'end to end: a job checkpoints itself with real CRIU, keeps running, and the image restores',
  { timeout: 120_000 },
  async (t) => {
    const bin = await findCriu().catch(() => null);
    if (!bin || process.getuid?.() !== 0) return t.skip('needs root and CRIU >= 4.2');
    const criu = new Criu({ criuPath: bin.path });
    const root = await mkdtemp('/tmp/drover-sc-e2e-');
    const jobDir = join(root, 'job');
    const logPath = join(root, 'job.log');
    const log = (): Promise<string> => readFile(logPath, 'utf8').catch(() => '');
    const toKill: number[] = [];
    let launcherExit: Promise<unknown> = Promise.resolve();
    let server: SelfCheckpointServer | null = null;
    try {
      await mkdir(jobDir);
      await writeFile(join(root, 'job.mjs'), JOB_SCRIPT);
      let nsInit = 0;
      let tickAtDump = 0;
      let tickAfterDump = 0;
      let image: ImageInfo | null = null;
      server = await SelfCheckpointServer.listen({
        jobId: 'job-e2e',
        jobDir,
        checkpoint: async () => {
          const imageId = newId('img');
          const dir = join(root, 'images', imageId);
          await mkdir(dir, { recursive: true });
          tickAtDump = Math.max(...ticks(await log()));
          const createdAt = new Date().toISOString();
          const res = await criu.dump({
            pid: nsInit,
            imagesDir: dir,
            leaveRunning: true,
            externals: ['mnt[]'],
          });
          // The job was frozen somewhere between these two ticks (it counts on once thawed).
          tickAfterDump = Math.max(...ticks(await log()));
          let sizeBytes = 0;
          for (const f of await readdir(dir)) sizeBytes += (await stat(join(dir, f))).size;
          const ms = Math.round(res.durationMs);
          image = {
            imageId,
            jobId: 'job-e2e',
            host: hostname(),
            dir,
            createdAt,
            leaveRunning: true,
            sizeBytes,
            frozenMs: ms,
            dumpMs: ms,
          };
          return image;
        },
      });
      const cmd = [process.execPath, join(root, 'job.mjs'), CLI, jobDir].map(q).join(' ');
      const script = [
        `awk '$3=="nsfs"{print $2}' /proc/self/mounts | xargs -r -n1 umount -l`,
        `exec </dev/null >>${q(logPath)} 2>&1`, // O_APPEND: CRIU does not size-check it on restore
        `exec setsid tini -s -- ${cmd}`,
      ].join('\n');
      const launcher = spawn(
        'setsid',
        ['unshare', ...JOB_NAMESPACE_FLAGS, '--', '/bin/sh', '-c', script],
        {
          stdio: 'ignore',
          env: { ...process.env, UV_USE_IO_URING: '0' },
        },
      );
      launcherExit = new Promise((r) => launcher.once('exit', r));
      nsInit = await until('the namespace init', async () => {
        const kids = await readFile(
          `/proc/${launcher.pid}/task/${launcher.pid}/children`,
          'utf8',
        ).catch(() => '');
        return Number(kids.trim().split(' ')[0]) || null;
      });
      toKill.push(nsInit);

      const first = await until(
        'the self-checkpoint to return',
        async () => ckptLines(await log())[0],
      );
      assert.ok(image, `the checkpoint did not succeed: ${JSON.stringify(first)}`);
      const img = image as ImageInfo;
      assert.deepEqual(first, { ...first, code: 0, stdout: img.imageId }, JSON.stringify(first));
      // Kept running: the original goes well past the checkpoint point.
      await until(
        'the original to keep counting',
        async () => Math.max(...ticks(await log())) >= tickAfterDump + 20,
      );
      process.kill(nsInit, 'SIGKILL');
      await launcherExit;
      toKill.length = 0; // reaped: its PID may be reused
      const before = await log();
      const reached = Math.max(...ticks(before));

      const { pid } = await criu.restore({ imagesDir: img.dir, root: '/', externals: ['mnt[]'] });
      toKill.push(pid);
      const after = await until('the restored job to count', async () => {
        const l = (await log()).slice(before.length);
        return ticks(l).length >= 5 && l;
      });
      const resumed = ticks(after);
      assert.ok(
        resumed[0]! > tickAtDump && resumed[0]! <= tickAfterDump + 1,
        `resumed at ${resumed[0]}, dumped between ${tickAtDump} and ${tickAfterDump}`,
      );
      assert.ok(resumed[0]! < reached, `resumed at ${resumed[0]}, the original reached ${reached}`);
      assert.deepEqual(
        resumed,
        resumed.map((_, i) => resumed[0]! + i),
      );
      // The restored client was caught mid-poll: it finds the same result and returns the same image.
      const again = await until(
        'the restored client to return',
        async () => ckptLines((await log()).slice(before.length))[0],
      );
      assert.equal(again.stdout, img.imageId);
      t.diagnostic(
        `dumped at tick ${tickAtDump} (${img.sizeBytes} B, ${img.dumpMs} ms); original reached ${reached}; restored resumed at ${resumed[0]}`,
      );
    } finally {
      for (const pid of toKill) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await launcherExit;
      for (const pid of toKill)
        await until(`pid ${pid} to die`, () => gone(pid), 10_000).catch(() => undefined);
      await server?.close();
      await rm(root, { recursive: true, force: true });
    }
  },
);
