/**
 * A job's network on this host: its veth on the host's job bridge, and what a move does to it —
 * attach at start, quiesce (no new connections) and lock (nothing in or out) around a dump,
 * detach when the original is discarded, announce (gratuitous ARP) once a restored copy runs.
 * Pairs: attach/detach, lock/unlock, quiesce/unquiesce. See docs/NETWORK.md for the model.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { DroverError, ErrorCode, type Logger } from '@drover/common';
import { runCommand } from '@drover/native';
import {
  hostVethName,
  JOB_INTERFACE,
  macFor,
  type JobAddress,
  type JobNetwork,
} from '@drover/protocol';

/** The nftables table (bridge family) in which this agent drops new connections to quiesced jobs. */
const QUIESCE_TABLE = 'drover';
const QUIESCE_SET = 'quiesced';

/** A command's outcome. */
interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(file: string, args: readonly string[], input?: string): Promise<Ran> {
  try {
    const r = await runCommand(file, args, {
      timeoutMs: 15_000,
      ...(input !== undefined ? { input } : {}),
    });
    return { code: r.code ?? 1, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    // Not started at all (ENOENT: not installed): what a shell says of a missing command.
    return { code: 127, stdout: '', stderr: String(err) };
  }
}

async function mustRun(what: string, file: string, args: readonly string[], input?: string) {
  const r = await run(file, args, input);
  if (r.code !== 0) {
    throw new DroverError(
      ErrorCode.Internal,
      `${what}: ${file} ${args.join(' ')}: ${r.stderr.trim()}`,
      {
        details: { command: [file, ...args], exitCode: r.code, stderr: r.stderr.slice(-2000) },
      },
    );
  }
  return r;
}

/** The job's own address (or null for a job on the host's network). */
export function addressOf(net: JobNetwork | undefined): JobAddress | null {
  return net?.mode === 'job' ? net : null;
}

/** A job network record from the run request's address: the MAC follows from the address. */
export function jobNetworkFor(
  req: { address: string; prefixLength: number; gateway?: string | undefined } | undefined,
): JobNetwork {
  if (!req) return { mode: 'host' };
  return {
    mode: 'job',
    address: req.address,
    prefixLength: req.prefixLength,
    gateway: req.gateway ?? null,
    mac: macFor(req.address),
  };
}

/** Refuse, changing nothing, when this host has no job bridge `bridge`. */
export function checkJobBridge(hostId: string, bridge: string): void {
  if (!existsSync(`/sys/class/net/${bridge}/bridge`)) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `${hostId} has no job bridge ${bridge}: jobs with their own address hang off it ` +
        '(create it on the job segment, see docs/NETWORK.md, or run the job with --net host)',
      { details: { host: hostId, bridge, reason: 'bridge-missing' } },
    );
  }
}

/**
 * Duplicate address detection (RFC 5227 probe, `arping -D`) on the job bridge: refuses with
 * ALREADY_EXISTS when anything on the segment answers for `address`. Takes about a second.
 */
export async function probeAddress(hostId: string, bridge: string, address: string): Promise<void> {
  const r = await run('arping', ['-D', '-c', '1', '-w', '1', '-I', bridge, address]);
  if (r.code === 0) return;
  const reply = /reply from \S+ \[([0-9A-Fa-f:]{17})\]/.exec(r.stdout);
  if (reply) {
    throw new DroverError(
      ErrorCode.AlreadyExists,
      `address ${address} is already in use on the job segment (answered by ${reply[1]!.toLowerCase()}); nothing was started`,
      {
        details: { address, mac: reply[1]!.toLowerCase(), host: hostId, reason: 'address-in-use' },
      },
    );
  }
  throw new DroverError(
    ErrorCode.FailedPrecondition,
    `cannot probe ${address} on ${bridge} (arping: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}; is iputils-arping installed?)`,
    { details: { address, bridge, exitCode: r.code } },
  );
}

/**
 * Give the job whose namespace init is `initPid` its interface: a veth whose host side hangs off
 * `bridge` and whose job side is `eth0` with the job's MAC, address and default route. The job's
 * IPv6 is off on eth0 (the job network is IPv4); loopback is up.
 */
export async function attachJob(
  jobId: string,
  initPid: number,
  net: JobAddress,
  bridge: string,
): Promise<void> {
  const outer = hostVethName(jobId);
  if (existsSync(`/sys/class/net/${outer}`)) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `link ${outer} (job ${jobId}'s) already exists on this host`,
      { details: { jobId, link: outer } },
    );
  }
  await mustRun('creating the job link', 'ip', [
    'link',
    'add',
    outer,
    'type',
    'veth',
    'peer',
    'name',
    JOB_INTERFACE,
    'netns',
    String(initPid),
  ]);
  try {
    await mustRun('attaching the job link', 'ip', ['link', 'set', outer, 'master', bridge, 'up']);
    const batch = [
      'link set lo up',
      `link set ${JOB_INTERFACE} address ${net.mac}`,
      `addr add ${net.address}/${net.prefixLength} dev ${JOB_INTERFACE}`,
      `link set ${JOB_INTERFACE} up`,
      ...(net.gateway ? [`route add default via ${net.gateway} dev ${JOB_INTERFACE}`] : []),
    ].join('\n');
    await mustRun(
      'configuring the job interface',
      'nsenter',
      [
        `--target=${initPid}`,
        '--net',
        '/bin/sh',
        '-c',
        `echo 1 > /proc/sys/net/ipv6/conf/${JOB_INTERFACE}/disable_ipv6 2>/dev/null; exec ip -b -`,
      ],
      batch + '\n',
    );
  } catch (err) {
    await run('ip', ['link', 'del', outer]);
    throw err;
  }
}

/**
 * Cut the job's link for good before its original is killed: nothing the dying tree's kernel
 * sockets send (FINs, resets) reaches the segment, where the restored copy now owns the address.
 */
export async function detachJob(jobId: string): Promise<void> {
  const outer = hostVethName(jobId);
  const r = await run('ip', ['link', 'del', outer]);
  if (r.code !== 0 && existsSync(`/sys/class/net/${outer}`)) {
    throw new DroverError(ErrorCode.Internal, `cannot remove link ${outer}: ${r.stderr.trim()}`, {
      details: { jobId, link: outer },
    });
  }
}

/**
 * The network lock of a frozen job: its bridge port stops forwarding, so nothing reaches the
 * job's kernel sockets and nothing leaves them while it is dumped and until it runs again here
 * or elsewhere. (CRIU locks the namespace during the dump itself but unlocks it when the tree is
 * left running; a frozen tree's kernel would still acknowledge data its copy never sees.) The
 * port's carrier stays up: a downed link would mark the job's routes `linkdown` in the image,
 * which the restore's `ip route restore` refuses.
 */
export async function lockJobNetwork(jobId: string): Promise<void> {
  await setPortState(jobId, 'disabled');
}

/** Undo {@link lockJobNetwork}: the port forwards again. */
export async function unlockJobNetwork(jobId: string): Promise<void> {
  await setPortState(jobId, 'forwarding');
}

/**
 * {@link lockJobNetwork} for several jobs with one `bridge` run (a cluster cut's jobs of this
 * host: one child instead of one per job, in the frozen window). It stops at the first port it
 * cannot set: the ones before it are locked.
 */
export async function lockJobNetworks(jobIds: readonly string[]): Promise<void> {
  await setPortStates(jobIds, 'disabled');
}

/** {@link unlockJobNetwork} for several jobs with one `bridge` run; stops at the first failure. */
export async function unlockJobNetworks(jobIds: readonly string[]): Promise<void> {
  await setPortStates(jobIds, 'forwarding');
}

type PortState = 'disabled' | 'forwarding';

/** `bridge link set` arguments that put a job's host-side port in `state` (STP's numbers). */
function portStateArgs(jobId: string, state: PortState): string[] {
  return ['link', 'set', 'dev', hostVethName(jobId), 'state', state === 'disabled' ? '0' : '3'];
}

async function setPortState(jobId: string, state: PortState): Promise<void> {
  await mustRun(
    `${state === 'disabled' ? 'locking' : 'unlocking'} job ${jobId}'s network`,
    'bridge',
    portStateArgs(jobId, state),
  );
}

async function setPortStates(jobIds: readonly string[], state: PortState): Promise<void> {
  if (jobIds.length <= 1) {
    for (const id of jobIds) await setPortState(id, state);
    return;
  }
  // `bridge -batch -`: one command per line from stdin, stopping at the first that fails.
  const lines = jobIds.map((id) => portStateArgs(id, state).join(' ') + '\n').join('');
  await mustRun(
    `${state === 'disabled' ? 'locking' : 'unlocking'} the networks of jobs ${jobIds.join(', ')}`,
    'bridge',
    ['-batch', '-'],
    lines,
  );
}

/** Make the bridge-family table that drops new connections to quiesced jobs (idempotent, fresh). */
export async function initQuiesce(log: Logger): Promise<void> {
  await run('nft', ['delete', 'table', 'bridge', QUIESCE_TABLE]);
  const r = await run(
    'nft',
    ['-f', '-'],
    [
      `table bridge ${QUIESCE_TABLE} {`,
      `  set ${QUIESCE_SET} { type ifname; }`,
      '  chain forward {',
      '    type filter hook forward priority 0; policy accept;',
      `    oifname @${QUIESCE_SET} tcp flags & (syn | ack) == syn drop`,
      '  }',
      '}',
    ].join('\n') + '\n',
  );
  if (r.code !== 0)
    log.warn('cannot create the quiesce table; moves will drop in-flight connections', {
      stderr: r.stderr,
    });
}

/** Accept-queue bookkeeping of a quiesce: how long it waited and what it left behind. */
export interface QuiesceResult {
  waitedMs: number;
  /** Connections still in a listener's queue when the wait ended (CRIU drops them). */
  inFlight: number;
}

/**
 * Before a job is frozen for a move: new connections to it are dropped at its bridge port (the
 * clients' SYNs are retransmitted after ~1 s and reach wherever the job runs by then), and the
 * wait lasts until its listeners' accept queues and half-open handshakes are empty, or
 * `timeoutMs`. Whatever is still in flight then is dropped by the dump (`--skip-in-flight`); its
 * clients see a reset.
 */
export async function quiesceJob(
  jobId: string,
  rootPid: number,
  timeoutMs: number,
): Promise<QuiesceResult> {
  const outer = hostVethName(jobId);
  const t0 = performance.now();
  const r = await run('nft', [
    'add',
    'element',
    'bridge',
    QUIESCE_TABLE,
    QUIESCE_SET,
    `{ "${outer}" }`,
  ]);
  if (r.code !== 0) return { waitedMs: 0, inFlight: await inFlightConnections(rootPid) };
  let inFlight = await inFlightConnections(rootPid);
  while (inFlight > 0 && performance.now() - t0 < timeoutMs) {
    await new Promise((res) => setTimeout(res, 10));
    inFlight = await inFlightConnections(rootPid);
  }
  return { waitedMs: Math.round(performance.now() - t0), inFlight };
}

/** Undo {@link quiesceJob} (a no-op when the job was not quiesced). */
export async function unquiesceJob(jobId: string): Promise<void> {
  await run('nft', [
    'delete',
    'element',
    'bridge',
    QUIESCE_TABLE,
    QUIESCE_SET,
    `{ "${hostVethName(jobId)}" }`,
  ]);
}

/**
 * Connections of the job's network namespace that a dump would find in flight: completed
 * handshakes in a listener's accept queue (`rx_queue` of a LISTEN row) and half-open ones
 * (SYN_RECV rows), read from /proc/<pid>/net/tcp{,6}.
 */
export async function inFlightConnections(pid: number): Promise<number> {
  let n = 0;
  for (const file of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = await readFile(`/proc/${pid}/net/${file}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      const st = f[3];
      if (st === '03') n++;
      else if (st === '0A') n += parseInt((f[4] ?? '0:0').split(':')[1] ?? '0', 16);
    }
  }
  return n;
}

/**
 * Once a restored copy runs: unsolicited ARP from the job's own interface, so the segment's
 * bridges and the peers' neighbour caches learn where its MAC and address are now. Sent twice
 * (now and 300 ms later, in case a frame is lost) and not waited for: arping lingers a second
 * after sending, and the job already runs (its own traffic teaches the segment too).
 */
export function announceJob(rootPid: number, net: JobAddress, log: Logger): void {
  const once = (): void => {
    void run('nsenter', [
      `--target=${rootPid}`,
      '--net',
      'arping',
      '-U',
      '-c',
      '1',
      '-I',
      JOB_INTERFACE,
      net.address,
    ]).then((r) => {
      if (r.code !== 0)
        log.warn('gratuitous ARP failed', { address: net.address, stderr: r.stderr });
    });
  };
  once();
  setTimeout(once, 300).unref();
}

/** CRIU `--external` entries that re-create the job's veth on this host's bridge at restore. */
export function restoreLinkExternals(jobId: string, bridge: string): string[] {
  return [`veth[${JOB_INTERFACE}]:${hostVethName(jobId)}@${bridge}`];
}
