/** The single lazily loaded libc handle: function bindings, struct layouts, constants, errno. */
import koffi from 'koffi';
import { constants as fsConstants } from 'node:fs';
import { SyscallError } from './errors.js';

/**
 * Linux ABI numbers this package uses. These are the generic values shared by x86_64 and
 * aarch64 (the architectures Drover runs on); O_NONBLOCK comes from Node, which knows the arch.
 */
export const LINUX = {
  AF_UNIX: 1,
  SOCK_SEQPACKET: 5,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SCM_RIGHTS: 1,
  MSG_CTRUNC: 0x8,
  MSG_TRUNC: 0x20,
  MSG_NOSIGNAL: 0x4000,
  MSG_CMSG_CLOEXEC: 0x40000000,
  F_DUPFD_CLOEXEC: 1030,
  F_GETFD: 1,
  F_SETFD: 2,
  F_GETFL: 3,
  F_SETFL: 4,
  FD_CLOEXEC: 1,
  O_NONBLOCK: fsConstants.O_NONBLOCK,
  O_CLOEXEC: 0o2000000,
  POLLIN: 0x1,
  POLLHUP: 0x10,
  POLLRDHUP: 0x2000,
  EPOLL_CTL_ADD: 1,
  EPOLL_CTL_DEL: 2,
  EPOLLIN: 0x1,
  PR_SET_CHILD_SUBREAPER: 36,
  PR_GET_CHILD_SUBREAPER: 37,
  SYS_pidfd_send_signal: 424,
  SYS_pidfd_open: 434,
  P_PIDFD: 3,
  WNOHANG: 0x1,
  WEXITED: 0x4,
  WNOWAIT: 0x01000000,
  CLD_EXITED: 1,
  CLD_KILLED: 2,
  CLD_DUMPED: 3,
  /** Size of siginfo_t on every Linux architecture (SI_MAX_SIZE). */
  SI_MAX_SIZE: 128,
  EINTR: 4,
  EAGAIN: 11,
  ECHILD: 10,
} as const;

/** Struct layouts, computed by koffi from the C definitions (anonymous: no global type names). */
function defineTypes() {
  const iovec = koffi.struct({ iov_base: 'void *', iov_len: 'size_t' });
  const msghdr = koffi.struct({
    msg_name: 'void *',
    msg_namelen: 'uint32_t',
    msg_iov: koffi.pointer(iovec),
    msg_iovlen: 'size_t',
    msg_control: 'void *',
    msg_controllen: 'size_t',
    msg_flags: 'int',
  });
  const cmsghdr = koffi.struct({ cmsg_len: 'size_t', cmsg_level: 'int', cmsg_type: 'int' });
  // The SIGCHLD arm of siginfo_t's union. Its longs give the union its alignment, which is what
  // places it at offset 16 on 64-bit (after three ints and padding) and 12 on 32-bit.
  const sigchld = koffi.struct({
    si_pid: 'int',
    si_uid: 'uint32_t',
    si_status: 'int',
    si_utime: 'long',
    si_stime: 'long',
  });
  const siginfoHead = koffi.struct({
    si_signo: 'int',
    si_errno: 'int',
    si_code: 'int',
    sifields: sigchld,
  });
  const pollfd = koffi.struct({ fd: 'int', events: 'short', revents: 'short' });
  return { iovec, msghdr, cmsghdr, sigchld, siginfoHead, pollfd };
}

type Types = ReturnType<typeof defineTypes>;
/** A koffi type: a C type name or a type object. */
type TypeSpec = Parameters<typeof koffi.sizeof>[0];

/** Offsets into a siginfo_t for a SIGCHLD-style record (what waitid fills in). */
export interface SiginfoLayout {
  readonly size: number;
  readonly code: number;
  readonly pid: number;
  readonly status: number;
}

/** A message header as koffi marshals it: pointer fields take Buffers (passed by address). */
export interface MsgHdr {
  msg_name: null;
  msg_namelen: number;
  msg_iov: { iov_base: Uint8Array; iov_len: number };
  msg_iovlen: number;
  msg_control: Uint8Array | null;
  msg_controllen: number;
  msg_flags: number;
}

/** Typed bindings; each returns the raw C result (-1 and errno on failure). */
export interface Libc {
  readonly types: Types;
  readonly siginfo: SiginfoLayout;
  close(fd: number): number;
  /** Variadic: pass `'int', value` after `cmd` when the command takes an argument. */
  fcntl(fd: number, cmd: number, ...vararg: unknown[]): number;
  socketpair(domain: number, type: number, protocol: number, sv: Int32Array): number;
  sendmsg(fd: number, msg: MsgHdr, flags: number): number;
  /** `msg` is in/out: koffi copies msg_controllen and msg_flags back into the object. */
  recvmsg(fd: number, msg: MsgHdr, flags: number): number;
  poll(fds: Uint8Array, nfds: number, timeout: number): number;
  epoll_create1(flags: number): number;
  epoll_ctl(epfd: number, op: number, fd: number, event: Uint8Array): number;
  /** Variadic: `prctl(option, 'unsigned long', arg2, ...)`. */
  prctl(option: number, ...vararg: unknown[]): number;
  /** Variadic: `syscall(nr, 'int', a, ...)`. */
  syscall(nr: number, ...vararg: unknown[]): number;
  waitid(idtype: number, id: number, infop: Uint8Array, options: number): number;
  setns(fd: number, nstype: number): number;
  /** `param` is a struct sched_param: one int, the priority. */
  sched_setscheduler(pid: number, policy: number, param: Int32Array): number;
  strerror(errnum: number): string;
  /** posix_spawn(3) and its helpers: each returns 0 or an error number (not -1 and errno). */
  posix_spawnp(
    pid: Int32Array,
    file: string,
    actions: Uint8Array,
    attr: Uint8Array,
    argv: (string | null)[],
    envp: (string | null)[],
  ): number;
  posix_spawn_file_actions_init(actions: Uint8Array): number;
  posix_spawn_file_actions_destroy(actions: Uint8Array): number;
  posix_spawn_file_actions_adddup2(actions: Uint8Array, fd: number, newfd: number): number;
  posix_spawn_file_actions_addopen(
    actions: Uint8Array,
    fd: number,
    path: string,
    flags: number,
    mode: number,
  ): number;
  posix_spawnattr_init(attr: Uint8Array): number;
  posix_spawnattr_destroy(attr: Uint8Array): number;
  posix_spawnattr_setflags(attr: Uint8Array, flags: number): number;
  posix_spawnattr_setsigmask(attr: Uint8Array, set: Uint8Array): number;
  posix_spawnattr_setsigdefault(attr: Uint8Array, set: Uint8Array): number;
  sigemptyset(set: Uint8Array): number;
  sigfillset(set: Uint8Array): number;
  pipe2(fds: Int32Array, flags: number): number;
}

let loaded: Libc | null = null;

/** The libc bindings, loading libc.so.6 on first use. */
export function libc(): Libc {
  if (loaded !== null) return loaded;
  const lib = koffi.load('libc.so.6');
  const types = defineTypes();
  const f = <T>(name: string, result: TypeSpec, args: TypeSpec[]): T =>
    lib.func(name, result, args) as unknown as T;
  const siginfo: SiginfoLayout = {
    size: LINUX.SI_MAX_SIZE,
    code: koffi.offsetof(types.siginfoHead, 'si_code'),
    pid: koffi.offsetof(types.siginfoHead, 'sifields') + koffi.offsetof(types.sigchld, 'si_pid'),
    status:
      koffi.offsetof(types.siginfoHead, 'sifields') + koffi.offsetof(types.sigchld, 'si_status'),
  };
  if (koffi.sizeof(types.siginfoHead) > LINUX.SI_MAX_SIZE) {
    throw new Error('siginfo_t layout larger than SI_MAX_SIZE: unsupported architecture');
  }
  loaded = {
    types,
    siginfo,
    close: f('close', 'int', ['int']),
    fcntl: f('fcntl', 'int', ['int', 'int', '...']),
    socketpair: f('socketpair', 'int', ['int', 'int', 'int', 'int *']),
    sendmsg: f('sendmsg', 'intptr_t', ['int', koffi.pointer(types.msghdr), 'int']),
    recvmsg: f('recvmsg', 'intptr_t', ['int', koffi.inout(koffi.pointer(types.msghdr)), 'int']),
    poll: f('poll', 'int', ['void *', 'unsigned long', 'int']),
    epoll_create1: f('epoll_create1', 'int', ['int']),
    epoll_ctl: f('epoll_ctl', 'int', ['int', 'int', 'int', 'void *']),
    prctl: f('prctl', 'int', ['int', '...']),
    syscall: f('syscall', 'long', ['long', '...']),
    waitid: f('waitid', 'int', ['int', 'uint32_t', 'void *', 'int']),
    setns: f('setns', 'int', ['int', 'int']),
    sched_setscheduler: f('sched_setscheduler', 'int', ['int', 'int', 'int *']),
    strerror: f('strerror', 'const char *', ['int']),
    posix_spawnp: f('posix_spawnp', 'int', [
      'int *',
      'const char *',
      'void *',
      'void *',
      'const char **',
      'const char **',
    ]),
    posix_spawn_file_actions_init: f('posix_spawn_file_actions_init', 'int', ['void *']),
    posix_spawn_file_actions_destroy: f('posix_spawn_file_actions_destroy', 'int', ['void *']),
    posix_spawn_file_actions_adddup2: f('posix_spawn_file_actions_adddup2', 'int', [
      'void *',
      'int',
      'int',
    ]),
    posix_spawn_file_actions_addopen: f('posix_spawn_file_actions_addopen', 'int', [
      'void *',
      'int',
      'const char *',
      'int',
      'unsigned int',
    ]),
    posix_spawnattr_init: f('posix_spawnattr_init', 'int', ['void *']),
    posix_spawnattr_destroy: f('posix_spawnattr_destroy', 'int', ['void *']),
    posix_spawnattr_setflags: f('posix_spawnattr_setflags', 'int', ['void *', 'short']),
    posix_spawnattr_setsigmask: f('posix_spawnattr_setsigmask', 'int', ['void *', 'void *']),
    posix_spawnattr_setsigdefault: f('posix_spawnattr_setsigdefault', 'int', ['void *', 'void *']),
    sigemptyset: f('sigemptyset', 'int', ['void *']),
    sigfillset: f('sigfillset', 'int', ['void *']),
    pipe2: f('pipe2', 'int', ['int *', 'int']),
  };
  return loaded;
}

/**
 * The SyscallError for the call that just failed. Call it immediately after the failing call:
 * errno is thread-local and live, and any later libc call may overwrite it.
 */
export function fail(syscall: string, args: string | number): SyscallError {
  const errno = koffi.errno();
  return new SyscallError(syscall, errno, {
    args: String(args),
    description: libc().strerror(errno),
  });
}

/** Run `call` again while it fails with EINTR; returns its first non-EINTR result. */
export function retryEintr(call: () => number): number {
  for (;;) {
    const r = call();
    if (r !== -1 || koffi.errno() !== LINUX.EINTR) return r;
  }
}
