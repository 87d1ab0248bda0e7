/**
 * One ZDTM static test as a Drover job, the way zdtm.py runs it with raw CRIU, but moved with
 * `drover migrate` h1 → h2 instead of dumped and restored in place: started with `make
 * <test>.pid` (the test daemonises and writes its pidfile: `--main-pidfile` makes it the job's
 * main process), its `.desc` options passed as `--checkpoint-opt` where Drover's list has them,
 * its hook run at zdtm.py's stages in the job's network and mount namespaces, stopped with
 * `drover stop`, passed if its `.out` says PASS. A `crfail` test (one raw CRIU must refuse to
 * dump without an option) passes if Drover's move is refused and the test, left running where it
 * was, passes its own check; or if the move succeeds (Drover's defaults turn on what the test
 * leaves off) and the test passes its check on the destination.
 *
 * Where the test keeps its files (`Placement`): by default in the job's own directory, which
 * travels with the job, each host holding its own copy on its own disk (as on real machines: the
 * place Drover's docs tell a job to keep its data). `shared` runs it in the suite's directory,
 * which both emulated hosts see at the same path (storage every host mounts); on one kernel that
 * also shares what separate machines never do (a FIFO's buffer, a lease, a lock held by the
 * frozen original), see docs/ZDTM.md.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { procEntry } from '@drover/native';
import type { ClusterJob } from '@drover/protocol';
import type { ClusterFixture } from '../cluster/fixture.js';
import { rootEnv, SYSTEM_PATH, type ZdtmDesc, type ZdtmResult } from './zdtm-suite.js';

const exec = promisify(execFile);

/** Where a test keeps its files: its job's directory (each host's own disk), or shared storage. */
export type Placement = 'job-dir' | 'shared';

/** The test's own command as its Makefile runs it for `<test>.pid` (`./test --pidfile=... ...`). */
async function makeCommand(staticDir: string, test: string): Promise<string> {
  const { stdout } = await exec('make', ['-n', '--no-print-directory', `${test}.pid`], {
    cwd: staticDir,
    env: { ...process.env, PATH: SYSTEM_PATH },
  });
  const line = stdout.trim().split('\n').at(-1) ?? '';
  if (!line.startsWith(`./${test} `)) throw new Error(`no command for ${test}.pid: ${line}`);
  return line;
}

/** CRIU options a `.desc` may name and the checkpoint option each is in Drover's list as. */
const OPTION_NAMES: Readonly<Record<string, string>> = {
  '--tcp-established': 'tcp-established',
  '--file-locks': 'file-locks',
  '--link-remap': 'link-remap',
  '--skip-in-flight': 'skip-in-flight',
  '--tcp-close': 'tcp-close',
  '--weak-sysctls': 'weak-sysctls',
  '--evasive-devices': 'evasive-devices',
  '--ghost-limit': 'ghost-limit',
};

/** `.desc` options as `--checkpoint-opt` values, and the ones Drover's list does not have. */
export function checkpointOptsOf(desc: ZdtmDesc): { opts: string[]; unmapped: string[] } {
  const words = [...desc.opts, ...desc.dopts, ...desc.ropts];
  const opts = new Set<string>();
  const unmapped: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    const name = OPTION_NAMES[w.split('=')[0]!];
    if (name === 'ghost-limit') {
      const v = w.includes('=') ? w.split('=')[1] : words[++i];
      opts.add(`ghost-limit=${v}`);
    } else if (name) {
      opts.add(name);
    } else if (w.startsWith('--')) {
      // An option with a value (`--network-lock nftables`) takes the next word with it.
      const next = words[i + 1];
      unmapped.push(next && !next.startsWith('--') && !w.includes('=') ? `${w} ${words[++i]}` : w);
    }
  }
  return { opts: [...opts], unmapped };
}

/** Environment zdtm.py gives a test in the `h` flavour (zdtm_test.start). */
function zdtmEnv(desc: ZdtmDesc, asRoot: boolean): string[] {
  const env = ['TMPDIR=/tmp', 'ZDTM_THREAD_BOMB=5'];
  for (const [k, v] of Object.entries(rootEnv(asRoot))) env.push(`${k}=${v}`);
  if (!desc.flags.includes('suid')) {
    env.push('ZDTM_UID=18943', 'ZDTM_GID=58467', 'ZDTM_GROUPS=27495 48244');
  }
  return env.flatMap((e) => ['--env', e]);
}

/**
 * Run `cmd` until it exits (not until its output closes: a hook may leave a client running with
 * it, as zdtm.py's Popen().wait() allows); a non-zero exit is an error.
 */
function waitExit(
  cmd: string,
  args: readonly string[],
  opts: { cwd: string; env: NodeJS.ProcessEnv },
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}`)),
    );
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `get` until it returns a value, for at most `ms`. */
async function until<T>(ms: number, get: () => Promise<T | undefined>): Promise<T | undefined> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await get().catch(() => undefined);
    if (v !== undefined || Date.now() > deadline) return v;
    await sleep(200);
  }
}

/**
 * The PID here of a job's init that the agent on `host` names `pid` (the agent sees its host's
 * PID namespace): the process whose PID one level down is `pid` and whose parent is in that
 * host's PID namespace (an agent's children are not its host init's: nsenter forks them).
 */
function rootPidHere(f: ClusterFixture, host: string, pid: number): number | null {
  const hostNs = readlinkSync(`/proc/${f.tb.host(host).initPid}/ns/pid`);
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const e = procEntry(Number(name));
    if (!e || e.nspid.length < 2 || e.nspid[1] !== pid) continue;
    try {
      if (readlinkSync(`/proc/${e.ppid}/ns/pid`) === hostNs) return e.pid;
    } catch {
      // its parent is gone: not this one
    }
  }
  return null;
}

/** Run one test through Drover; never throws (a failure is a result with its reason). */
export async function runThroughDrover(
  f: ClusterFixture,
  testDir: string,
  test: string,
  desc: ZdtmDesc,
  asRoot = false,
  placement: Placement = 'job-dir',
): Promise<ZdtmResult & { unmapped: string[] }> {
  const staticDir = join(testDir, 'zdtm', 'static');
  const { opts, unmapped } = checkpointOptsOf(desc);
  const timeoutMs = desc.timeoutSec * 1000;
  const crfail = desc.flags.includes('crfail');
  const imgDir = join(testDir, 'dump', 'drover-none');
  mkdirSync(imgDir, { recursive: true });
  // zdtm.py runs a test's hook in the test's namespaces (the host's, in the h flavour): here
  // that is the job's, on whichever host it is now; `--clean` runs after it ended, here.
  const hook = async (stage: string, id?: string): Promise<void> => {
    if (!desc.hook) return;
    const path = `./zdtm/static/${test}.hook`;
    // zdtm.py points hooks at its dumps' image directories (some compare them between dumps):
    // Drover keeps none once the move is over, so they get an empty one, nothing to compare.
    const env = { ...process.env, PATH: SYSTEM_PATH, ZDTM_IMG_DIR: imgDir };
    if (id === undefined) {
      await waitExit(path, [stage], { cwd: testDir, env });
      return;
    }
    // The network and mount namespaces only: what a hook starts (a client) is not the job's.
    const i = await f.json<{ host: string; rootPid: number; mainPidInside: number | null }>([
      'inspect',
      id,
    ]);
    const root = rootPidHere(f, i.host, i.rootPid);
    if (root === null) throw new Error(`job ${id}'s init (${i.rootPid} on ${i.host}) is gone`);
    await waitExit(
      'nsenter',
      ['-t', String(root), '-n', '-m', `--wd=${testDir}`, '--', path, stage],
      { cwd: testDir, env: { ...env, ZDTM_TEST_PID: String(i.mainPidInside ?? 1) } },
    );
  };
  // Where the job lives now, or where it ended (`drover jobs` lists running jobs only).
  const job = async (id: string): Promise<ClusterJob | undefined> =>
    f.json<ClusterJob>(['inspect', id]).catch(() => undefined);
  let jobId: string | null = null;
  const fail = (why: string): ZdtmResult & { unmapped: string[] } => ({
    test,
    ok: false,
    why: unmapped.length ? `${why} [needs ${unmapped.join(', ')}]` : why,
    unmapped,
  });
  try {
    await exec('make', ['--no-print-directory', '-C', staticDir, `${test}.cleanout`], {
      env: { ...process.env, PATH: SYSTEM_PATH },
    });
    // In the job's directory: the test's binary copied there and run as its Makefile would; its
    // pidfile copied where the wrapper reads it once (the host's own /tmp).
    const pidfile =
      placement === 'shared' ? join(staticDir, `${test}.pid`) : `/tmp/zdtm-${test}.pid`;
    const command =
      placement === 'shared'
        ? ['make', '--no-print-directory', '-C', staticDir, `${test}.pid`]
        : [
            'sh',
            '-c',
            `set -e; d="$DROVER_JOB_DIR/zdtm"; mkdir -p "$d"; cp ${join(staticDir, test)} "$d/"; ` +
              `cd "$d"; ${await makeCommand(staticDir, test)}; cp ${test}.pid ${pidfile}`,
          ];
    const started = await f.drover([
      '--json',
      'run',
      '--host',
      'h1',
      '--cwd',
      staticDir,
      '--main-pidfile',
      pidfile,
      ...zdtmEnv(desc, asRoot),
      ...opts.flatMap((o) => ['--checkpoint-opt', o]),
      '--',
      ...command,
    ]);
    if (started.code !== 0) return fail(`start: ${started.stderr.trim().split('\n').at(-1)}`);
    jobId = (JSON.parse(started.stdout) as ClusterJob).id;
    const id = jobId;
    // As zdtm.py: the post-start hook runs while the test starts (some wait for it).
    const postStart = hook('--post-start', id).then(
      () => null,
      (err: unknown) => err as Error,
    );
    const running = await until(timeoutMs, async () => {
      const j = await job(id);
      return j && (j.mainPidInside !== null || j.state !== 'running') ? j : undefined;
    });
    if (!running || running.state !== 'running' || running.mainPidInside === null) {
      const err = await f.json<{ data: string }>(['logs', id, '--stderr']).catch(() => null);
      return fail(
        `start: ${running?.state ?? 'timeout'} ${err?.data.trim().split('\n').at(-1) ?? ''}`,
      );
    }
    const hookFailed = await postStart;
    if (hookFailed) return fail(`hook --post-start: ${hookFailed.message.split('\n')[0]}`);
    await hook('--pre-dump', id);
    const moved = await f.drover(['--json', 'migrate', id, '--to', 'h2'], timeoutMs * 4);
    const op = JSON.parse(moved.stdout || '{}') as { state?: string; error?: { message: string } };
    if (op.state !== 'done' && !crfail)
      return fail(`migrate: ${op.error?.message ?? moved.stderr.trim()}`);
    // crfail and moved: Drover's defaults did what raw CRIU without the option cannot (file
    // locks on, the ghost limit sized to the job); the test's own check below still decides.
    await hook('--post-restore', id);
    const stopped = await f.drover(['stop', id]);
    if (stopped.code !== 0) return fail(`stop: ${stopped.stderr.trim() || stopped.stdout.trim()}`);
    const ended = await until(timeoutMs, async () => {
      const j = await job(id);
      return j && j.state !== 'running' ? j : undefined;
    });
    if (!ended) return fail('stop: still running');
    const out =
      placement === 'shared'
        ? await readFile(join(staticDir, `${test}.out`), 'utf8').catch(() => '')
        : // On the host the job ended on, in its directory there.
          ((await f.tb.host(ended.host).exec(['cat', join(ended.jobDir, 'zdtm', `${test}.out`)]))
            .stdout ?? '');
    if (!out.split(/\s+/).includes('PASS')) {
      return fail(`result: ${out.trim().split('\n').slice(-2).join(' / ') || 'no .out'}`);
    }
    return { test, ok: true, unmapped };
  } catch (err) {
    return fail(`harness: ${(err as Error).message.split('\n')[0]}`);
  } finally {
    if (jobId !== null) {
      const j = await job(jobId).catch(() => undefined);
      if (j && j.state === 'running') await f.drover(['signal', jobId, 'SIGKILL']);
    }
    await hook('--clean').catch(() => undefined);
  }
}
