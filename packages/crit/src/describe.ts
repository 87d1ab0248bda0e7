/**
 * Words for what CRIU's images record as numbers: socket families, types and states, addresses,
 * a mapping's permissions and kind, a file descriptor in one line (as `crit x fds` prints it).
 */
import type { ImageFd, ImageSocket } from '@drover/protocol';
import { FD_TYPES, VmaStatus } from './image-schema.js';
import type { Decoded } from './image-file.js';

const AF_INET = 2;
const AF_INET6 = 10;

const SOCK_TYPES: Record<number, string> = {
  1: 'stream',
  2: 'dgram',
  3: 'raw',
  5: 'seqpacket',
  10: 'packet',
};

/** The kernel's TCP states (`include/net/tcp_states.h`); other sockets reuse some of them. */
const TCP_STATES: Record<number, string> = {
  1: 'ESTABLISHED',
  2: 'SYN_SENT',
  3: 'SYN_RECV',
  4: 'FIN_WAIT1',
  5: 'FIN_WAIT2',
  6: 'TIME_WAIT',
  7: 'CLOSE',
  8: 'CLOSE_WAIT',
  9: 'LAST_ACK',
  10: 'LISTEN',
  11: 'CLOSING',
};

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v ?? 0));

/** CRIU's name of file type `n`. */
export function fdTypeName(n: unknown): string {
  return FD_TYPES[num(n)] ?? `TYPE${num(n)}`;
}

/** An address CRIU stored as u32 words in memory order (little-endian hosts). */
function address(family: number, words: readonly unknown[]): string {
  const bytes = Buffer.alloc(words.length * 4);
  words.forEach((w, i) => bytes.writeUInt32LE(num(w) >>> 0, i * 4));
  if (family === AF_INET) return [...bytes.subarray(0, 4)].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  // The longest run of zero groups becomes `::`.
  const text = groups.join(':');
  const runs = text.match(/(?:^|:)0(?::0)+(?::|$)/g);
  if (!runs) return text;
  const longest = runs.reduce((a, b) => (b.length > a.length ? b : a));
  return text.replace(longest, '::');
}

/** An inet socket (`inet_sk_entry`). */
export function inetSocket(isk: Decoded): ImageSocket {
  const family = num(isk.family);
  const v6 = family === AF_INET6;
  const proto = num(isk.proto);
  const type = SOCK_TYPES[num(isk.type)] ?? `type${num(isk.type)}`;
  const state = num(isk.state);
  const fmt = (words: unknown, port: unknown): string => {
    const a = address(family, Array.isArray(words) && words.length ? words : [0, 0, 0, 0]);
    return v6 ? `[${a}]:${num(port)}` : `${a}:${num(port)}`;
  };
  const connectionless = proto !== 6;
  const remote = num(isk.dst_port) !== 0 ? fmt(isk.dst_addr, isk.dst_port) : null;
  return {
    family: v6 ? 'inet6' : 'inet',
    type: proto === 6 ? 'stream' : proto === 17 ? 'dgram' : type,
    state: connectionless
      ? remote === null
        ? 'unconnected'
        : 'connected'
      : (TCP_STATES[state] ?? `state${state}`),
    local: fmt(isk.src_addr, isk.src_port),
    remote,
  };
}

/** A unix socket (`unix_sk_entry`). */
export function unixSocket(usk: Decoded): ImageSocket {
  const raw = usk.name instanceof Uint8Array ? Buffer.from(usk.name) : Buffer.alloc(0);
  // An abstract name starts with a NUL byte: shown as @name, the way ss and crit do.
  const name =
    raw.length === 0
      ? null
      : raw[0] === 0
        ? `@${raw.subarray(1).toString('utf8').replace(/\0/g, '@')}`
        : raw.toString('utf8').replace(/\0+$/, '');
  const dir = typeof usk.name_dir === 'string' && usk.name_dir ? `${usk.name_dir}/` : '';
  const state = num(usk.state);
  const peer = num(usk.peer);
  return {
    family: 'unix',
    type: SOCK_TYPES[num(usk.type)] ?? `type${num(usk.type)}`,
    state:
      state === 10
        ? 'LISTEN'
        : peer !== 0 || state === 1
          ? 'connected'
          : (TCP_STATES[state] ?? 'unconnected'),
    local: name === null ? null : `${dir}${name}${usk.deleted === true ? ' (deleted)' : ''}`,
    remote: null,
    ino: num(usk.ino),
    peer,
  };
}

/** One file descriptor for a human, from its fdinfo and the file it points at. */
export function describeFd(
  fd: number,
  type: string,
  id: number,
  file: Decoded | undefined,
  regName: (id: number) => string | null,
): ImageFd {
  const base = { fd, type };
  if (type === 'REG') {
    const reg = (file?.reg ?? {}) as Decoded;
    const path = typeof reg.name === 'string' ? reg.name : (regName(id) ?? 'unknown path');
    return {
      ...base,
      description: path,
      path,
      pos: num(reg.pos),
      ...(reg.size !== undefined ? { size: num(reg.size) } : {}),
    };
  }
  if (type === 'PIPE') {
    const p = (file?.pipe ?? {}) as Decoded;
    return { ...base, description: `pipe[${num(p.pipe_id)}]` };
  }
  if (type === 'FIFO') {
    const f = (file?.fifo ?? {}) as Decoded;
    const path = f.regf_id !== undefined ? regName(num(f.regf_id)) : null;
    return { ...base, description: `fifo[${num(f.pipe_id)}]${path ? ` ${path}` : ''}` };
  }
  if (type === 'INETSK' && file?.isk) {
    const socket = inetSocket(file.isk as Decoded);
    const proto = `${socket.type === 'stream' ? 'tcp' : socket.type === 'dgram' ? 'udp' : socket.type}${socket.family === 'inet6' ? '6' : ''}`;
    const ends = socket.remote ? `${socket.local} → ${socket.remote}` : socket.local;
    return { ...base, description: `${proto} ${ends} ${socket.state}`, socket };
  }
  if (type === 'UNIXSK' && file?.usk) {
    const socket = unixSocket(file.usk as Decoded);
    const name = socket.local ?? '(unnamed)';
    const peer = socket.peer ? ` peer ${socket.peer}` : '';
    return {
      ...base,
      description: `unix ${socket.type} ${name} ${socket.state}${peer}`,
      socket,
    };
  }
  if (type === 'NETLINKSK' && file?.nlsk) {
    const n = file.nlsk as Decoded;
    return {
      ...base,
      description: `netlink protocol ${num(n.protocol)}`,
      socket: { family: 'netlink', type: 'raw', state: 'unconnected', local: null, remote: null },
    };
  }
  return { ...base, description: `${type.toLowerCase()}.${id}` };
}

/** `rwxp`/`rwxs` of a mapping. */
export function mappingPerms(prot: number, flags: number): string {
  return (
    (prot & 1 ? 'r' : '-') +
    (prot & 2 ? 'w' : '-') +
    (prot & 4 ? 'x' : '-') +
    (flags & 1 ? 's' : 'p')
  );
}

/** What a mapping is: a file's path, `[heap]`, `[stack]`, `[anon]`, ... (as `crit x mems`). */
export function mappingKind(
  status: number,
  flags: number,
  shmid: number,
  regName: (id: number) => string | null,
): string {
  if (status & VmaStatus.sysvipc) return 'sysvipc';
  if (status & VmaStatus.socket) return 'packet socket';
  if (status & VmaStatus.memfd) return `memfd ${regName(shmid) ?? ''}`.trim();
  if (status & (VmaStatus.filePrivate | VmaStatus.fileShared))
    return regName(shmid) ?? 'unknown file';
  if (status & VmaStatus.anonShared) return 'shmem';
  if (status & VmaStatus.stack) return '[stack]';
  if (status & VmaStatus.vsyscall) return '[vsyscall]';
  if (status & VmaStatus.vdso) return '[vdso]';
  if (status & VmaStatus.vvar) return '[vvar]';
  if (status & VmaStatus.heap) return '[heap]';
  if (status & VmaStatus.aioring) return '[aio]';
  if (flags & 0x0100) return '[stack?]';
  return '[anon]';
}
