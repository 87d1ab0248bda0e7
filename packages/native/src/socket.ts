/** AF_UNIX SOCK_SEQPACKET socketpairs and one-message-per-call I/O with SCM_RIGHTS fd passing. */
import koffi from 'koffi';
import { DroverError, ErrorCode } from '@drover/common';
import { closeFd } from './fd.js';
import { fail, libc, LINUX, retryEintr, type MsgHdr } from './libc.js';

/** One received message. */
export interface RecvResult {
  /** The message bytes (a copy: it does not alias any internal buffer). */
  data: Buffer;
  /** Descriptors that arrived with the message (SCM_RIGHTS), already FD_CLOEXEC. Caller owns them. */
  fds: number[];
  /** The peer has shut down and nothing is left to read. */
  eof: boolean;
  /** The kernel cut the message (MSG_TRUNC) or its descriptors (MSG_CTRUNC) to fit. */
  truncated: boolean;
}

/** Options of {@link socketpairSeqpacket}. */
export interface SocketpairOptions {
  /** Create both ends FD_CLOEXEC. Default true; clear it per fd with setCloexec to hand one on. */
  cloexec?: boolean;
}

/** cmsg(3) arithmetic for this architecture, from koffi's view of `struct cmsghdr`. */
interface CmsgMath {
  /** CMSG_LEN(0): where a control message's data starts. */
  readonly dataOffset: number;
  readonly sizeofInt: number;
  align(n: number): number;
  /** CMSG_SPACE(n). */
  space(n: number): number;
}

let cmsgMath: CmsgMath | null = null;

function cmsg(): CmsgMath {
  if (cmsgMath !== null) return cmsgMath;
  // glibc's CMSG_ALIGN rounds to sizeof(size_t); the header is {size_t len; int level; int type}.
  const word = koffi.sizeof('size_t');
  const align = (n: number): number => Math.ceil(n / word) * word;
  const dataOffset = align(koffi.sizeof(libc().types.cmsghdr));
  cmsgMath = {
    dataOffset,
    sizeofInt: koffi.sizeof('int'),
    align,
    space: (n) => dataOffset + align(n),
  };
  return cmsgMath;
}

/** Reused receive buffer: grows to the largest maxLen asked for; results are copied out of it. */
let scratch: Buffer = Buffer.alloc(0);

/**
 * Create a connected pair of AF_UNIX SOCK_SEQPACKET sockets (both blocking).
 * @returns the two descriptors; the caller closes both.
 */
export function socketpairSeqpacket(options: SocketpairOptions = {}): [number, number] {
  const sv = new Int32Array(2);
  const type = LINUX.SOCK_SEQPACKET | ((options.cloexec ?? true) ? LINUX.SOCK_CLOEXEC : 0);
  if (libc().socketpair(LINUX.AF_UNIX, type, 0, sv) < 0) {
    throw fail('socketpair', 'AF_UNIX, SOCK_SEQPACKET');
  }
  return [sv[0] ?? -1, sv[1] ?? -1];
}

/**
 * Send `data` as one message, with `fds` (if any) attached as SCM_RIGHTS. The receiver gets
 * its own duplicates; the caller still owns and must close `fds`. Uses MSG_NOSIGNAL, so a
 * closed peer is a SyscallError EPIPE, never SIGPIPE. On a non-blocking fd a full socket
 * buffer is SyscallError EAGAIN (retryable): wait and send again.
 * @returns the number of bytes sent (all of `data`: SEQPACKET does not send partial messages).
 */
export function sendmsg(fd: number, data: Uint8Array, fds: readonly number[] = []): number {
  let control: Buffer | null = null;
  if (fds.length > 0) {
    const m = cmsg();
    for (const f of fds) {
      if (!Number.isInteger(f) || f < 0 || f > 0x7fffffff) {
        throw new DroverError(ErrorCode.InvalidArgument, `sendmsg: not a descriptor: ${f}`);
      }
    }
    const payload = fds.length * m.sizeofInt;
    control = Buffer.alloc(m.space(payload));
    koffi.encode(control, 0, libc().types.cmsghdr, {
      cmsg_len: m.dataOffset + payload,
      cmsg_level: LINUX.SOL_SOCKET,
      cmsg_type: LINUX.SCM_RIGHTS,
    });
    fds.forEach((f, i) => koffi.encode(control, m.dataOffset + i * m.sizeofInt, 'int', f));
  }
  const msg: MsgHdr = {
    msg_name: null,
    msg_namelen: 0,
    msg_iov: { iov_base: data, iov_len: data.byteLength },
    msg_iovlen: 1,
    msg_control: control,
    msg_controllen: control === null ? 0 : control.length,
    msg_flags: 0,
  };
  const c = libc();
  const n = retryEintr(() => c.sendmsg(fd, msg, LINUX.MSG_NOSIGNAL));
  if (n < 0) throw fail('sendmsg', fd);
  return n;
}

/**
 * Receive one message of at most `maxLen` bytes and at most `maxFds` descriptors (default 0:
 * any descriptors sent are dropped by the kernel and `truncated` is set). Descriptors arrive
 * FD_CLOEXEC (MSG_CMSG_CLOEXEC). On a blocking fd this blocks the event loop until a message
 * comes: use non-blocking fds with {@link watchReadable}.
 * @returns null when a non-blocking fd has nothing to read (EAGAIN), else the message. `eof` is
 *   true for a zero-length read with no descriptors after the peer shut down; a zero-length
 *   message from a live peer comes back as empty data with `eof: false`.
 */
export function recvmsg(fd: number, maxLen: number, maxFds = 0): RecvResult | null {
  if (!Number.isInteger(maxLen) || maxLen < 0 || !Number.isInteger(maxFds) || maxFds < 0) {
    throw new DroverError(ErrorCode.InvalidArgument, `recvmsg: bad sizes ${maxLen}, ${maxFds}`);
  }
  const m = cmsg();
  if (scratch.length < maxLen) scratch = Buffer.allocUnsafeSlow(maxLen);
  const control = maxFds > 0 ? Buffer.alloc(m.space(maxFds * m.sizeofInt)) : null;
  const msg: MsgHdr = {
    msg_name: null,
    msg_namelen: 0,
    msg_iov: { iov_base: scratch, iov_len: maxLen },
    msg_iovlen: 1,
    msg_control: control,
    // CMSG_LEN, not CMSG_SPACE: the kernel fills all the room it is given, and the padding of
    // CMSG_SPACE fits one more int on 64-bit (maxFds 1 would accept 2 descriptors).
    msg_controllen: control === null ? 0 : m.dataOffset + maxFds * m.sizeofInt,
    msg_flags: 0,
  };
  const c = libc();
  const n = retryEintr(() => c.recvmsg(fd, msg, LINUX.MSG_CMSG_CLOEXEC));
  if (n < 0) {
    if (koffi.errno() === LINUX.EAGAIN) return null;
    throw fail('recvmsg', fd);
  }
  const fds: number[] = [];
  try {
    if (control !== null) readRights(control, Number(msg.msg_controllen), fds);
    const truncated = (msg.msg_flags & (LINUX.MSG_TRUNC | LINUX.MSG_CTRUNC)) !== 0;
    const eof = n === 0 && fds.length === 0 && !truncated && peerShutDown(fd);
    return { data: Buffer.from(scratch.subarray(0, n)), fds, eof, truncated };
  } catch (err) {
    for (const f of fds) closeFd(f);
    throw err;
  }
}

/** Append the descriptors of every SCM_RIGHTS message in the first `len` bytes of `control`. */
function readRights(control: Buffer, len: number, fds: number[]): void {
  const m = cmsg();
  const { cmsghdr } = libc().types;
  const end = Math.min(len, control.length);
  for (let off = 0; off + m.dataOffset <= end;) {
    const h = koffi.decode(control, off, cmsghdr) as {
      cmsg_len: number | bigint;
      cmsg_level: number;
      cmsg_type: number;
    };
    const cmsgLen = Number(h.cmsg_len);
    if (cmsgLen < m.dataOffset || off + cmsgLen > end) break;
    if (h.cmsg_level === LINUX.SOL_SOCKET && h.cmsg_type === LINUX.SCM_RIGHTS) {
      const count = Math.floor((cmsgLen - m.dataOffset) / m.sizeofInt);
      for (let i = 0; i < count; i++) {
        fds.push(koffi.decode(control, off + m.dataOffset + i * m.sizeofInt, 'int') as number);
      }
    }
    off += m.align(cmsgLen);
  }
}

/**
 * Whether the peer has shut down its sending side (POLLRDHUP/POLLHUP), checked without waiting.
 * SEQPACKET's recvmsg returns 0 both at EOF and for an empty message; this tells them apart.
 */
function peerShutDown(fd: number): boolean {
  const { pollfd } = libc().types;
  const buf = Buffer.alloc(koffi.sizeof(pollfd));
  koffi.encode(buf, 0, pollfd, { fd, events: LINUX.POLLIN | LINUX.POLLRDHUP, revents: 0 });
  const c = libc();
  if (retryEintr(() => c.poll(buf, 1, 0)) < 0) throw fail('poll', fd);
  const { revents } = koffi.decode(buf, 0, pollfd) as { revents: number };
  return (revents & (LINUX.POLLRDHUP | LINUX.POLLHUP)) !== 0;
}
