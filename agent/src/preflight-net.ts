/** Preflight's socket analysis: which TCP and UNIX connections of a job lead outside it. */
import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import { DroverError, ErrorCode } from '@drover/common';
import { runCommand } from '@drover/native';
import type { PreflightReason } from '@drover/protocol';
import { isGone } from './proc-scan.js';

/** Who holds one socket: every (pid, fd) of the tree that refers to it. */
export type Holders = ReadonlyMap<number, readonly { pid: number; fd: number }[]>;

/** TCP states as /proc/net/tcp numbers them (include/net/tcp_states.h). */
export const TcpState = {
  '01': 'ESTABLISHED',
  '02': 'SYN_SENT',
  '03': 'SYN_RECV',
  '04': 'FIN_WAIT1',
  '05': 'FIN_WAIT2',
  '06': 'TIME_WAIT',
  '07': 'CLOSE',
  '08': 'CLOSE_WAIT',
  '09': 'LAST_ACK',
  '0A': 'LISTEN',
  '0B': 'CLOSING',
  '0C': 'NEW_SYN_RECV',
} as const;

/** One row of /proc/<pid>/net/tcp or tcp6. */
export interface TcpEntry {
  local: { address: string; port: number };
  remote: { address: string; port: number };
  state: string;
  inode: number;
}

/** The 4 bytes of one 32-bit word as the kernel printed it (`%08X` of a host-order u32). */
function wordBytes(hex: string): number[] {
  const bytes = [0, 2, 4, 6].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return endianness() === 'LE' ? bytes.reverse() : bytes;
}

/**
 * A /proc/net/tcp{,6} hex address as text: dotted IPv4, RFC 5952 IPv6, and IPv4-mapped IPv6
 * (`::ffff:a.b.c.d`) as plain dotted IPv4 so loopback checks see one form.
 */
export function parseHexAddress(hex: string): string {
  if (hex.length === 8) return wordBytes(hex).join('.');
  if (hex.length !== 32) throw new Error(`bad address ${hex}`);
  const bytes = [0, 8, 16, 24].flatMap((i) => wordBytes(hex.slice(i, i + 8)));
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return bytes.slice(12).join('.');
  }
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  // Compress the longest run (>= 2) of zero groups, the first one on a tie.
  let best = { at: -1, len: 0 };
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = j === i ? i + 1 : j;
  }
  const hexes = groups.map((g) => g.toString(16));
  if (best.len < 2) return hexes.join(':');
  return `${hexes.slice(0, best.at).join(':')}::${hexes.slice(best.at + best.len).join(':')}`;
}

/** True for 127.0.0.0/8 and ::1. */
export function isLoopback(address: string): boolean {
  return address === '::1' || /^127\./.test(address);
}

/** The rows of a /proc/net/tcp or tcp6 text. */
export function parseTcpTable(text: string): TcpEntry[] {
  const out: TcpEntry[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    const [local, remote, st, inode] = [f[1], f[2], f[3], f[9]];
    if (local === undefined || remote === undefined || st === undefined || inode === undefined)
      continue;
    const ep = (s: string): { address: string; port: number } => {
      const [a, p] = s.split(':');
      return { address: parseHexAddress(a ?? ''), port: parseInt(p ?? '0', 16) };
    };
    const state = (TcpState as Record<string, string>)[st] ?? st;
    out.push({ local: ep(local), remote: ep(remote), state, inode: Number(inode) });
  }
  return out;
}

/** The TCP sockets of a network namespace, read through /proc/<pid>/net of a process inside it. */
export async function readTcpTables(pid: number): Promise<TcpEntry[] | null> {
  const out: TcpEntry[] = [];
  for (const file of ['tcp', 'tcp6']) {
    try {
      out.push(...parseTcpTable(await readFile(`/proc/${pid}/net/${file}`, 'utf8')));
    } catch (err) {
      if (isGone(err) && file === 'tcp6') continue; // IPv6 disabled
      if (isGone(err)) return null;
      throw err;
    }
  }
  return out;
}

const ep = (e: { address: string; port: number }): string =>
  e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
const key = (a: TcpEntry['local'], b: TcpEntry['remote']): string => `${ep(a)}>${ep(b)}`;

/**
 * EXTERNAL_TCP (and UNSUPPORTED for listeners bound to a host-specific address when `moving`)
 * for the tree's sockets in one network namespace's table. A connection is external when either
 * end is not loopback, or when it is loopback but its reverse tuple is not held by the tree
 * (the peer is another process of this host), except a connection still waiting in the accept
 * queue of one of the tree's listeners (the reverse tuple then has inode 0).
 */
export function tcpReasons(
  table: readonly TcpEntry[],
  holders: Holders,
  hostAddresses: readonly string[],
  moving: boolean,
): PreflightReason[] {
  const byTuple = new Map(table.map((e) => [key(e.local, e.remote), e]));
  const mine = table.filter((e) => holders.has(e.inode));
  const listenPorts = new Set(mine.filter((e) => e.state === 'LISTEN').map((e) => e.local.port));
  const listeners = table.filter((e) => e.state === 'LISTEN');
  /** Whether anything in this namespace (the job or not) listens where `to` points. */
  const somebodyListens = (to: TcpEntry['remote']): boolean =>
    listeners.some(
      (l) => l.local.port === to.port && [to.address, '0.0.0.0', '::'].includes(l.local.address),
    );
  const reasons: PreflightReason[] = [];
  for (const e of mine) {
    const who = holders.get(e.inode) ?? [];
    const first = who[0] ?? { pid: 0, fd: -1 };
    if (e.state === 'CLOSE') continue; // created, never connected
    if (e.state === 'LISTEN') {
      const a = e.local.address;
      if (moving && !isLoopback(a) && a !== '0.0.0.0' && a !== '::') {
        reasons.push({
          code: 'UNSUPPORTED',
          message:
            `process ${first.pid} listens on ${ep(e.local)} (fd ${first.fd}), an address of this host; ` +
            'the destination cannot bind it on restore. Listen on 0.0.0.0/:: or loopback instead.',
          details: {
            kind: 'tcp-listen-host-address',
            pid: first.pid,
            fd: first.fd,
            holders: who,
            local: ep(e.local),
          },
        });
      }
      continue;
    }
    let peer: string;
    if (!isLoopback(e.local.address) || !isLoopback(e.remote.address)) {
      peer = hostAddresses.includes(e.remote.address) ? 'a service on this host' : 'another host';
    } else {
      const back = byTuple.get(key(e.remote, e.local));
      if (back !== undefined && holders.has(back.inode)) continue;
      if (back !== undefined && back.inode === 0 && listenPorts.has(e.remote.port)) continue;
      // A connection attempt to a local port nobody listens on has no peer at all, inside the
      // job or out: CRIU moves it as it is and the job sees it refused or retried there.
      if (back === undefined && e.state === 'SYN_SENT' && !somebodyListens(e.remote)) continue;
      peer = 'a process on this host outside the job';
    }
    reasons.push({
      code: 'EXTERNAL_TCP',
      message:
        `process ${first.pid} has a TCP connection (fd ${first.fd}, ${e.state}) from ${ep(e.local)} to ` +
        `${ep(e.remote)}, ${peer}; on the host's network it cannot follow the job to another host. ` +
        'Run the job on its own address (the default of drover run, not --net host): its ' +
        'connections then move with it. Or close it, or let the job reconnect after the move.',
      details: {
        pid: first.pid,
        fd: first.fd,
        holders: who,
        inode: e.inode,
        state: e.state,
        local: ep(e.local),
        remote: ep(e.remote),
        addresses: [e.local.address, e.remote.address],
        remoteIsThisHost: hostAddresses.includes(e.remote.address) || isLoopback(e.remote.address),
      },
    });
  }
  return reasons;
}

/** One UNIX socket as `ss -xanH` prints it. */
export interface UnixEntry {
  type: 'stream' | 'dgram' | 'seqpacket';
  state: string;
  recvQ: number;
  /** Bound path, `@abstract` name, or null if unbound. */
  address: string | null;
  inode: number;
  /** The peer socket's inode, 0 when unconnected (or the peer is gone / not yet accepted). */
  peer: number;
}

const UNIX_TYPES = { u_str: 'stream', u_dgr: 'dgram', u_seq: 'seqpacket' } as const;

/**
 * Rows of `ss -xanH`: `Netid State Recv-Q Send-Q Local-Address Inode Peer-Address Peer-Inode`.
 * The local address may contain spaces, so the row is matched from both ends.
 */
export function parseSsUnix(text: string): UnixEntry[] {
  const out: UnixEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^(u_str|u_dgr|u_seq)\s+(\S+)\s+(\d+)\s+\d+\s+(.*?)\s+(\d+)\s+\S+\s+(\d+)\s*$/.exec(
      line,
    );
    if (m === null) continue;
    const [, netid, state, recvQ, address, inode, peer] = m;
    out.push({
      type: UNIX_TYPES[netid as keyof typeof UNIX_TYPES],
      state: state ?? '',
      recvQ: Number(recvQ),
      address: address === '*' || address === undefined ? null : address,
      inode: Number(inode),
      peer: Number(peer),
    });
  }
  return out;
}

/**
 * UNIX sockets of the network namespace `pid` lives in. /proc/net/unix has no peer, and sock_diag
 * needs a netlink socket Node cannot open, so this runs iproute2's `ss -xanH` — inside that
 * namespace through `nsenter --target <pid> --net` unless it is our own (`sameNamespace`).
 */
export async function readUnixSockets(pid: number, sameNamespace: boolean): Promise<UnixEntry[]> {
  const [file, args] = sameNamespace
    ? ['ss', ['-xanH']]
    : ['nsenter', ['--target', String(pid), '--net', 'ss', '-xanH']];
  const r = await runCommand(file, args, { timeoutMs: 15_000, maxBuffer: 256 * 1024 * 1024 });
  if (r.code !== 0) {
    const why = r.stderr.trim() || (r.timedOut ? 'timed out' : `exit ${r.code ?? r.signal}`);
    throw new DroverError(ErrorCode.Internal, `cannot list UNIX sockets (${file}): ${why}`);
  }
  return parseSsUnix(r.stdout);
}

/**
 * EXTERNAL_UNIX_SOCKET for the tree's connected UNIX sockets whose peer inode is not held by the
 * tree. Bound or listening sockets with no peer and socketpairs inside the tree are fine. A peer
 * inode of 0 on a connected stream (peer closed, or not yet accepted) is not reported.
 */
export function unixReasons(table: readonly UnixEntry[], holders: Holders): PreflightReason[] {
  const byInode = new Map(table.map((e) => [e.inode, e]));
  const reasons: PreflightReason[] = [];
  for (const e of table) {
    if (!holders.has(e.inode) || e.peer === 0 || holders.has(e.peer)) continue;
    const who = holders.get(e.inode) ?? [];
    const first = who[0] ?? { pid: 0, fd: -1 };
    const peerAddress = byInode.get(e.peer)?.address ?? null;
    const to = peerAddress !== null ? `${peerAddress} (socket ${e.peer})` : `socket ${e.peer}`;
    reasons.push({
      code: 'EXTERNAL_UNIX_SOCKET',
      message:
        `process ${first.pid} has a UNIX ${e.type} socket (fd ${first.fd}) connected to ${to}, ` +
        'held by a process outside the job; the connection cannot be moved. Close it, or put both ' +
        'ends in the job.',
      details: {
        pid: first.pid,
        fd: first.fd,
        holders: who,
        inode: e.inode,
        type: e.type,
        address: e.address,
        peerInode: e.peer,
        peerAddress,
      },
    });
  }
  return reasons;
}
