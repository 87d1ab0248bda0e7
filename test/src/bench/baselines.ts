/**
 * The baselines a migration is compared with, run on the same testbed in the same run:
 * - the floor: `criu dump` into tmpfs and `criu restore` from it on one host, no network;
 * - by hand: `criu dump` to disk, `scp -r` of the directory to the other host, `criu restore`
 *   there over `ssh` — what users do today;
 * - the link: raw TCP throughput between the two hosts.
 * The job is the same memory workload in the same kind of namespaces as a Drover job (its own
 * PID, mount, UTS and IPC namespaces, tini as init), started by hand, outside any agent.
 */
import { chmodSync, copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Host, HostProcess, SshdService } from '@drover/testbed';
import { waitReady, workloadCommand } from '../workloads/mod.js';
import { heartbeatGap } from './heartbeat-gap.js';
import { JOB_NAMESPACE_FLAGS } from '@drover/native';
import { SCRATCH_TMPFS_OPTION } from '@drover/agent';

/** A job started by hand in a host: where it runs and its init's PID in that host. */
export interface HandJob {
  dir: string;
  host: Host;
  /** PID of the job's init (tini) inside `host`'s PID namespace. */
  pid: number;
  launcher: HostProcess | null;
}

/** One baseline run: phase times (ms) and the job's own longest heartbeat gap. */
export interface BaselineRun {
  dumpMs: number;
  copyMs: number;
  restoreMs: number;
  totalMs: number;
  gapMs: number;
  imageBytes: number;
}

// The same steps as a Drover job's init (agent/src/job-runtime.ts), minus cgroups: nsfs mounts
// dropped, stdio reopened inside the new mount namespace, tini as a session leader.
const INIT = `
awk '$3 == "nsfs" { print $2 }' /proc/self/mounts | xargs -r -n1 umount -l 2>/dev/null
exec </dev/null >>"$BENCH_DIR/stdout.log" 2>>"$BENCH_DIR/stderr.log"
cd /
exec setsid tini -s -- "$@"
`;

/**
 * CRIU's own options for a job in its own mount namespace. The host's /srv (its own disk) is
 * named explicitly: auto-detection (`mnt[]`) would bind the source host's directory on restore,
 * which another host does not have (docs/MIGRATION.md, "What travels with the job").
 */
export const CRIU_DUMP = `--external 'mnt[]' --external 'mnt[/srv]:srv'`;
const CRIU_RESTORE = `--external 'mnt[]' --external 'mnt[srv]:/srv'`;

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** The first descendant of `pid` whose executable is tini (breadth first). */
function findTini(pid: number): number | null {
  const queue = [pid];
  while (queue.length) {
    const p = queue.shift()!;
    try {
      if (readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'tini') return p;
    } catch {
      // gone
    }
    queue.push(...childrenOf(p));
  }
  return null;
}

/** PIDs of a root-namespace process from the outermost namespace inward (NSpid). */
function nspids(pid: number): number[] {
  const m = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return (m?.[1] ?? '').split(/\s+/).map(Number);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Start a memory workload of `mb` MiB by hand in `host`, in its own namespaces. */
export async function startHandJob(host: Host, dir: string, mb: number): Promise<HandJob> {
  const launcher = await host.spawn(
    [
      'unshare',
      ...JOB_NAMESPACE_FLAGS,
      '--',
      '/bin/sh',
      '-c',
      INIT,
      'bench-init',
      ...workloadCommand('memory', { dir, mb }),
    ],
    { name: `hand-job-${mb}`, env: { BENCH_DIR: dir, UV_USE_IO_URING: '0' } },
  );
  let tini: number | null = null;
  for (let i = 0; i < 500 && tini === null; i++) {
    tini = findTini(launcher.pid);
    if (tini === null) await sleep(10);
  }
  if (tini === null) throw new Error(`no tini under the hand-started job in ${host.name}`);
  await waitReady(dir, 180_000);
  // NSpid: root namespace, the host's, the job's own.
  const pid = nspids(tini)[1];
  if (pid === undefined) throw new Error(`cannot tell the PID of ${tini} inside ${host.name}`);
  return { dir, host, pid, launcher };
}

/** Kill a hand-started job (its init, inside the host it now runs in). */
export async function killHandJob(job: HandJob): Promise<void> {
  await job.host.exec(['kill', '-9', String(job.pid)]).catch(() => undefined);
}

/** Parse "t0 t1 t2 t3 pid bytes" (ns timestamps) printed by a baseline script. */
function parseTimes(stdout: string): { t: number[]; pid: number; bytes: number } {
  const f = stdout.trim().split('\n').pop()!.trim().split(/\s+/).map(Number);
  return { t: f.slice(0, 4), pid: f[4]!, bytes: f[5]! };
}

async function runScript(host: Host, script: string, timeoutMs: number): Promise<string> {
  const r = await host.exec(['/bin/sh', '-c', script], { timeoutMs });
  if (r.code !== 0)
    throw new Error(`baseline script in ${host.name} failed (${r.code}): ${r.stderr.slice(-1500)}`);
  return r.stdout;
}

/**
 * The floor: dump into tmpfs and restore from it, on the host the job runs on. The job keeps
 * running there (restored) for the next run. `tmpfs: 'scratch'` runs it on a tmpfs of its own
 * mounted like the agents' scratch (large folios: docs/MIGRATION.md, _Scratch on large folios_),
 * unmounted after; the default is the host's /dev/shm as it comes.
 */
export async function floorRun(
  job: HandJob,
  tmpfs: 'host' | 'scratch' = 'host',
): Promise<BaselineRun> {
  const d = `/dev/shm/drover-bench-floor-${job.host.name}`;
  const mount =
    tmpfs === 'scratch'
      ? `trap 'umount $d 2>/dev/null || true' EXIT
mount -t tmpfs -o mode=0700,${SCRATCH_TMPFS_OPTION} drover-bench-floor $d
`
      : '';
  const w0 = Date.now();
  const out = await runScript(
    job.host,
    `set -e; d=${d}; rm -rf $d; mkdir -p $d
${mount}t0=$(date +%s%N)
criu dump -t ${job.pid} -D $d ${CRIU_DUMP} -o dump.log
t1=$(date +%s%N)
bytes=$(du -sb $d | cut -f1)
criu restore -D $d --root / ${CRIU_RESTORE} -d --pidfile $d/restored.pid -o restore.log
t2=$(date +%s%N)
echo $t0 $t1 $t1 $t2 $(cat $d/restored.pid) $bytes
${tmpfs === 'scratch' ? 'umount $d; ' : ''}rm -rf $d`,
    300_000,
  );
  const w1 = Date.now();
  const { t, pid, bytes } = parseTimes(out);
  job.pid = pid;
  await sleep(300);
  const ms = (a: number, b: number): number => (t[b]! - t[a]!) / 1e6;
  return {
    dumpMs: ms(0, 1),
    copyMs: 0,
    restoreMs: ms(2, 3),
    totalMs: ms(0, 3),
    gapMs: await heartbeatGap(job.dir, w0, w1),
    imageBytes: bytes,
  };
}

/** The by-hand baseline's ssh client key, on the source host's disk (its /srv). */
const KEY_FILE = '.drover-bench-ssh-key';

/**
 * The shell script of a cluster checkpoint's floor on one host: a raw `criu dump --leave-running`
 * of each of `pids` into tmpfs under `dir`, all started at once; it prints `t0 t1 bytes` (ns from
 * the first start to the last end, bytes written) or fails with the first CRIU errors.
 */
export function parallelDumpScript(dir: string, pids: readonly number[]): string {
  return `d=${dir}; rm -rf $d; mkdir -p $d
t0=$(date +%s%N)
${pids.map((p) => `mkdir $d/${p}; criu dump -t ${p} -D $d/${p} --leave-running ${CRIU_DUMP} -o dump.log & w="$w $!"`).join('\n')}
fail=0; for x in $w; do wait $x || fail=1; done
t1=$(date +%s%N)
bytes=$(du -sb $d | cut -f1)
if [ $fail != 0 ]; then grep -h Error $d/*/dump.log | head -20 >&2; rm -rf $d; exit 1; fi
rm -rf $d
echo $t0 $t1 $bytes`;
}

/** What {@link parallelDumpScript} printed: milliseconds from first start to last end, bytes. */
export function parseParallelDump(stdout: string): { ms: number; bytes: number } {
  const f = stdout.trim().split('\n').pop()!.trim().split(/\s+/).map(Number);
  if (f.length !== 3 || f.some((x) => !Number.isFinite(x)))
    throw new Error(`cannot read the floor script's output: ${stdout.slice(-200)}`);
  return { ms: (f[1]! - f[0]!) / 1e6, bytes: f[2]! };
}

/**
 * The floor of a cluster checkpoint on one host: its jobs (`pids`, in the host) dumped raw by CRIU
 * all at once into tmpfs, leaving them running. No freezer, no sealing, no job directory.
 */
export async function parallelDumpRun(
  host: Host,
  pids: readonly number[],
): Promise<{ ms: number; bytes: number }> {
  const d = `/dev/shm/drover-bench-cut-floor-${host.name}`;
  return parseParallelDump(await runScript(host, parallelDumpScript(d, pids), 600_000));
}

/**
 * By hand: dump to the source host's disk (its /srv), `scp -r` the directory to the other host,
 * restore there through `ssh`. The job then runs on `to`.
 */
export async function byHandRun(job: HandJob, to: Host, sshd: SshdService): Promise<BaselineRun> {
  const d = '/srv/drover-bench-byhand';
  // The client key goes onto the source host's own disk: it sees no other path of the run.
  copyFileSync(sshd.clientPrivateKeyPath, join(job.host.stateDir, KEY_FILE));
  chmodSync(join(job.host.stateDir, KEY_FILE), 0o600);
  const ssh = `-i /srv/${KEY_FILE} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes`;
  const remote = `root@${sshd.address}`;
  await runScript(job.host, `ssh ${ssh} ${remote} rm -rf ${d}`, 30_000);
  const w0 = Date.now();
  const out = await runScript(
    job.host,
    `set -e; d=${d}; rm -rf $d; mkdir -p $d
t0=$(date +%s%N)
criu dump -t ${job.pid} -D $d ${CRIU_DUMP} -o dump.log
t1=$(date +%s%N)
bytes=$(du -sb $d | cut -f1)
scp -q -r ${ssh} $d ${remote}:/srv/
t2=$(date +%s%N)
pid=$(ssh ${ssh} ${remote} "criu restore -D $d --root / ${CRIU_RESTORE} -d --pidfile $d/restored.pid -o restore.log && cat $d/restored.pid")
t3=$(date +%s%N)
echo $t0 $t1 $t2 $t3 $pid $bytes
rm -rf $d /srv/${KEY_FILE}`,
    600_000,
  );
  const w1 = Date.now();
  const { t, pid, bytes } = parseTimes(out);
  job.pid = pid;
  job.host = to;
  await sleep(300);
  await runScript(to, `rm -rf ${d}`, 30_000);
  const ms = (a: number, b: number): number => (t[b]! - t[a]!) / 1e6;
  return {
    dumpMs: ms(0, 1),
    copyMs: ms(1, 2),
    restoreMs: ms(2, 3),
    totalMs: ms(0, 3),
    gapMs: await heartbeatGap(job.dir, w0, w1),
    imageBytes: bytes,
  };
}

const PROBE = fileURLToPath(new URL('./tcp-probe.js', import.meta.url));

/** Raw TCP throughput from `from` to `to` (bytes per second), sending `bytes`. */
export async function linkRun(from: Host, to: Host, bytes: number, port: number): Promise<number> {
  const sink = await to.spawn([process.execPath, PROBE, 'sink', to.address, String(port)], {
    // A log of its own per run: the readiness line must be this sink's.
    name: `tcp-probe-sink-${port}`,
  });
  try {
    await sink.waitForOutput(/listening/, 10_000);
    const r = await from.exec(
      [process.execPath, PROBE, 'send', to.address, String(port), String(bytes)],
      {
        timeoutMs: 120_000,
      },
    );
    if (r.code !== 0) throw new Error(`tcp probe failed: ${r.stderr}`);
    const { bytes: got, ms } = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
      bytes: number;
      ms: number;
    };
    if (got !== bytes) throw new Error(`tcp probe: sent ${bytes}, the sink counted ${got}`);
    return (got * 1000) / ms;
  } finally {
    sink.kill('SIGKILL');
    await sink.exited;
  }
}

/** Where a hand job's files are. */
export function handJobDir(shared: string, tag: string): string {
  return join(shared, `hand-${tag}`);
}
