/**
 * Children started without forking this process: posix_spawnp(3), whose child shares our
 * memory until it execs (glibc clones with CLONE_VM | CLONE_VFORK), so its cost does not grow
 * with our size. Node's child_process forks: the page tables of a large process (an agent is
 * ~180 MB) are copied, and every page we write afterwards takes a copy-on-write fault; measured
 * here that is 5 ms of our CPU in the spawn call alone and 10–20 ms all told per child, against
 * under 1 ms through posix_spawnp. The exit is watched through a pidfd (process.ts), the output
 * read through pipes on Node's event loop.
 */
import { Socket } from 'node:net';
import { DroverError, ErrorCode } from '@drover/common';
import { closeFd } from './fd.js';
import { fail, libc, LINUX } from './libc.js';
import { SyscallError } from './errors.js';
import { pidfdOpen, pidfdSendSignal, waitForExit, type ChildStatus } from './process.js';

/** Options of {@link runCommand}. */
export interface RunOptions {
  /** Written to the command's stdin, which is then closed; without it stdin is /dev/null. */
  input?: string;
  /** SIGTERM once the command has run this long (it is then reported `timedOut`). */
  timeoutMs?: number;
  /** Bytes kept of stdout and of stderr each; past this the command is killed (SIGTERM). */
  maxBuffer?: number;
  /** The environment; this process's by default. */
  env?: NodeJS.ProcessEnv;
}

/** How a command ended and what it printed. Exactly one of `code` and `signal` is set. */
export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Killed because it ran past `timeoutMs`. */
  timedOut: boolean;
  /** Killed because its output passed `maxBuffer` (the output is cut there). */
  overflowed: boolean;
}

const DEFAULT_MAX_BUFFER = 16 * 1024 * 1024;
/** glibc's attribute flags (spawn.h). */
const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
/**
 * Room for posix_spawn_file_actions_t (80 bytes on 64-bit glibc), posix_spawnattr_t (336) and
 * sigset_t (128): opaque to us, initialised and freed by libc's own calls.
 */
const OPAQUE_BYTES = 1024;

/** A pipe whose both ends close on exec (the child's copy is made by dup2, which clears that). */
function pipe(): [read: number, write: number] {
  const fds = new Int32Array(2);
  if (libc().pipe2(fds, LINUX.O_CLOEXEC) < 0) throw fail('pipe2', 'O_CLOEXEC');
  return [fds[0]!, fds[1]!];
}

/** posix_spawn's functions return the error number instead of setting errno. */
function check(what: string, r: number, args: string): void {
  if (r !== 0) throw new SyscallError(what, r, { args, description: libc().strerror(r) });
}

/**
 * Start `file` (looked up in PATH) with `args` and `fds[n]` as its descriptor n (null: /dev/null);
 * nothing else of ours (every descriptor of ours is close-on-exec; the copies made here are not).
 * Every signal is at its default and none is blocked: Node ignores SIGPIPE, and an ignored signal
 * stays ignored across exec. Returns its PID.
 */
function spawnWith(
  file: string,
  args: readonly string[],
  fds: readonly (number | null)[],
  env: NodeJS.ProcessEnv,
): number {
  const l = libc();
  const actions = Buffer.alloc(OPAQUE_BYTES);
  const attr = Buffer.alloc(OPAQUE_BYTES);
  const sigs = Buffer.alloc(OPAQUE_BYTES);
  // A source numbered below fds.length could be overwritten by an earlier dup2: move it above.
  const moved: number[] = [];
  const sources = fds.map((fd) => {
    if (fd === null || fd >= fds.length) return fd;
    const high = l.fcntl(fd, LINUX.F_DUPFD_CLOEXEC, 'int', fds.length);
    if (high < 0) throw fail('fcntl', `${fd}, F_DUPFD_CLOEXEC`);
    moved.push(high);
    return high;
  });
  check('posix_spawn_file_actions_init', l.posix_spawn_file_actions_init(actions), file);
  try {
    check('posix_spawnattr_init', l.posix_spawnattr_init(attr), file);
    try {
      sources.forEach((fd, n) => {
        if (fd === null)
          check(
            'addopen',
            l.posix_spawn_file_actions_addopen(actions, n, '/dev/null', 2, 0),
            '/dev/null',
          );
        else check('adddup2', l.posix_spawn_file_actions_adddup2(actions, fd, n), `${fd} -> ${n}`);
      });
      l.sigfillset(sigs);
      check('setsigdefault', l.posix_spawnattr_setsigdefault(attr, sigs), file);
      l.sigemptyset(sigs);
      check('setsigmask', l.posix_spawnattr_setsigmask(attr, sigs), file);
      check(
        'setflags',
        l.posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK),
        file,
      );
      const envp: (string | null)[] = [];
      for (const [k, v] of Object.entries(env)) if (v !== undefined) envp.push(`${k}=${v}`);
      envp.push(null);
      const pid = new Int32Array(1);
      const argv = [file, ...args, null];
      check('posix_spawnp', l.posix_spawnp(pid, file, actions, attr, argv, envp), file);
      return pid[0]!;
    } finally {
      l.posix_spawnattr_destroy(attr);
    }
  } finally {
    l.posix_spawn_file_actions_destroy(actions);
    for (const fd of moved) closeFd(fd);
  }
}

/** Options of {@link spawnDirect}. */
export interface DirectOptions {
  /** The child's stdout and stderr: read through `stdout`/`stderr`, or /dev/null. */
  stdout?: 'pipe' | 'ignore';
  stderr?: 'pipe' | 'ignore';
  /** Written to the child's stdin, which is then closed; without it stdin is /dev/null. */
  input?: string;
  /**
   * Our descriptors the child gets as 3, 4, ... in order (ours stay open: close them after);
   * null puts /dev/null there, 'pipe' a pipe the child writes and we read (`DirectChild.pipes`).
   */
  extraFds?: readonly (number | null | 'pipe')[];
  /** The environment; this process's by default. */
  env?: NodeJS.ProcessEnv;
}

/**
 * A process started by {@link spawnDirect}: its pipes, its exit (through a pidfd, reaped by us),
 * and a kill that can never reach a process that reused its PID.
 */
export class DirectChild {
  /** How it ended; resolves once it has been reaped. */
  readonly exited: Promise<ChildStatus>;
  private status: ChildStatus | null = null;
  private pidfd: number | null;

  constructor(
    readonly pid: number,
    pidfd: number,
    readonly stdout: Socket | null,
    readonly stderr: Socket | null,
    /** Our read ends of the 'pipe' entries of `extraFds`, by child fd (3 for the first entry). */
    readonly pipes: ReadonlyMap<number, Socket> = new Map(),
  ) {
    this.pidfd = pidfd;
    this.exited = waitForExit(pidfd).finally(() => {
      closeFd(pidfd);
      this.pidfd = null;
    });
    void this.exited.then(
      (s) => (this.status = s),
      () => undefined,
    );
  }

  /** How it ended, once it has (null while it runs). */
  get exitStatus(): ChildStatus | null {
    return this.status;
  }

  /** Send `signal`; false if it has exited already. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): boolean {
    if (this.pidfd === null) return false;
    try {
      pidfdSendSignal(this.pidfd, signal);
      return true;
    } catch {
      return false;
    }
  }
}

/**
 * Start `file` (looked up in PATH) without forking this process (see the file's comment).
 * @throws SyscallError when it cannot be started (ENOENT: no such command in PATH).
 */
export function spawnDirect(
  file: string,
  args: readonly string[],
  options: DirectOptions = {},
): DirectChild {
  if (file.length === 0)
    throw new DroverError(ErrorCode.InvalidArgument, 'spawnDirect: no command');
  const mine: number[] = [];
  const theirs: number[] = [];
  const pipeTo = (ours: 'read' | 'write'): [read: number, write: number] => {
    const p = pipe();
    mine.push(ours === 'read' ? p[0] : p[1]);
    theirs.push(ours === 'read' ? p[1] : p[0]);
    return p;
  };
  let out: [number, number] | null = null;
  let err: [number, number] | null = null;
  let input: [number, number] | null = null;
  const piped: [childFd: number, ours: number][] = [];
  let pid: number;
  let pidfd: number;
  try {
    if (options.input !== undefined) input = pipeTo('write');
    if ((options.stdout ?? 'pipe') === 'pipe') out = pipeTo('read');
    if ((options.stderr ?? 'pipe') === 'pipe') err = pipeTo('read');
    const extra = (options.extraFds ?? []).map((fd, i) => {
      if (fd !== 'pipe') return fd;
      const p = pipeTo('read');
      piped.push([3 + i, p[0]]);
      return p[1];
    });
    const fds = [input?.[0] ?? null, out?.[1] ?? null, err?.[1] ?? null, ...extra];
    pid = spawnWith(file, args, fds, options.env ?? process.env);
    // At once: the child is ours and nobody else reaps it, so its PID cannot be reused yet.
    pidfd = pidfdOpen(pid);
  } catch (e) {
    for (const fd of mine) closeFd(fd);
    throw e;
  } finally {
    // The child has its copies; ours must go or EOF never comes.
    for (const fd of theirs) closeFd(fd);
  }
  if (input) {
    const sink = new Socket({ fd: input[1], readable: false, writable: true });
    sink.on('error', () => undefined); // EPIPE: the child did not read it all
    sink.end(options.input ?? '');
  }
  const reader = (fd: number): Socket => new Socket({ fd, readable: true, writable: false });
  const pipes = new Map(piped.map(([n, fd]) => [n, reader(fd)]));
  return new DirectChild(
    pid,
    pidfd,
    out ? reader(out[0]) : null,
    err ? reader(err[0]) : null,
    pipes,
  );
}

/** Collect a pipe's bytes up to `max`; `onOverflow` once past it. Resolves at EOF. */
function collect(sock: Socket, max: number, onOverflow: () => void): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    sock.on('data', (b: Buffer) => {
      if (over) return;
      if (size + b.length > max) {
        chunks.push(b.subarray(0, max - size));
        size = max;
        over = true;
        onOverflow();
        return;
      }
      chunks.push(b);
      size += b.length;
    });
    const done = (): void => resolve(Buffer.concat(chunks).toString('utf8'));
    sock.on('error', done);
    sock.on('close', done);
  });
}

/**
 * Run a short command to its end, like `execFile`, without forking this process (see the file's
 * comment). Resolves however the command ended (read `code`/`signal`); throws SyscallError when
 * it cannot be started at all (ENOENT: no such command in PATH).
 */
export async function runCommand(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<Ran> {
  const max = options.maxBuffer ?? DEFAULT_MAX_BUFFER;
  const child = spawnDirect(file, args, {
    ...(options.input !== undefined ? { input: options.input } : {}),
    ...(options.env ? { env: options.env } : {}),
  });
  let timedOut = false;
  let overflowed = false;
  const timer =
    options.timeoutMs !== undefined
      ? setTimeout(() => {
          timedOut = true;
          child.kill('SIGTERM');
        }, options.timeoutMs)
      : null;
  const overflow = (): void => {
    overflowed = true;
    child.kill('SIGTERM');
  };
  try {
    const [status, stdout, stderr] = await Promise.all([
      child.exited,
      collect(child.stdout!, max, overflow),
      collect(child.stderr!, max, overflow),
    ]);
    return { code: status.exitCode, signal: status.signal, stdout, stderr, timedOut, overflowed };
  } finally {
    if (timer) clearTimeout(timer);
  }
}
