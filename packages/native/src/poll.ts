/** Readiness watches on Node's event loop, through koffi's libuv poll handle (`koffi.node.poll`). */
import koffi, { type IKoffiPollEvents } from 'koffi';
import { DroverError, ErrorCode } from '@drover/common';
import { fail, libc, LINUX } from './libc.js';

/** What woke a watch. Spurious wake-ups happen: a reader must cope with finding nothing. */
export interface ReadableEvent {
  /** Reading will not block: data, EOF or an error is waiting. */
  readable: boolean;
  /** The peer shut down its sending side (POLLRDHUP), or the poll itself failed. */
  disconnect: boolean;
}

/** A running watch. */
export interface FdWatch {
  /** Stop watching and release the handle. Safe to call more than once. Call before closing the fd. */
  stop(): void;
  /** Let the process exit while this watch is the only thing left on the event loop. */
  unref(): void;
  /** Undo {@link FdWatch.unref}. */
  ref(): void;
}

type PollHandle = ReturnType<typeof koffi.node.poll>;

/**
 * Watches by fd. It keeps each PollHandle reachable (koffi closes a collected handle, which would
 * end the watch silently) and enforces one watch per fd: libuv misbehaves with two poll handles
 * on one descriptor (the second registration removes the first from epoll).
 */
const active = new Map<number, FdWatch>();

/**
 * Stop the watch on `fd`, if any. closeFd calls this first: libuv aborts the process (epoll_ctl
 * EBADF) when a watched fd is closed before the loop's next turn, and a stale registration
 * would confuse a later watch of a reused fd number.
 */
export function stopWatchOf(fd: number): void {
  active.get(fd)?.stop();
}

/**
 * Call `onEvent` whenever `fd` is readable or its peer disconnects, from the event loop (never
 * blocking it). The watch is level-triggered: `onEvent` must drain the fd (read until EAGAIN) or
 * stop the watch, or it is called again at once. Side effect: libuv makes `fd` O_NONBLOCK.
 * Stop the watch before closing `fd` (closeFd does it for you; fs.closeSync does not, and closing
 * a just-watched fd that way aborts the process inside libuv). A throw from `onEvent` becomes an
 * uncaughtException; promise jobs it queues run as soon as it returns.
 * @throws SyscallError EBADF for a closed fd and EPERM for one epoll cannot watch (a regular
 *   file); DroverError ALREADY_EXISTS if `fd` already has a watch.
 */
export function watchReadable(fd: number, onEvent: (ev: ReadableEvent) => void): FdWatch {
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) {
    throw new DroverError(ErrorCode.InvalidArgument, `watchReadable: not a descriptor: ${fd}`);
  }
  if (active.has(fd)) {
    throw new DroverError(ErrorCode.AlreadyExists, `watchReadable: fd ${fd} is already watched`);
  }
  // koffi 2.16 crashes the process (SIGSEGV) when libuv refuses the fd, so refuse it first.
  assertPollable(fd);

  let handle: PollHandle | null = null;
  const watch: FdWatch = {
    stop() {
      if (handle === null) return;
      const h = handle;
      handle = null;
      active.delete(fd);
      // close(), not stop(): it frees the libuv handle. Never touch it again afterwards:
      // koffi's stop()/ref()/unref() on a closed handle dereference NULL.
      h.close();
    },
    unref() {
      handle?.unref();
    },
    ref() {
      handle?.ref();
    },
  };
  // koffi calls back with (status, events), although its index.d.ts declares (events) alone;
  // accept both so a koffi release that matches its typings keeps working.
  const onPoll = (a: unknown, b?: unknown): void => {
    if (handle === null) return;
    const status = typeof a === 'number' ? a : 0;
    const ev = (typeof a === 'number' ? b : a) as Partial<IKoffiPollEvents> | undefined;
    if (status < 0) {
      // libuv saw POLLERR and stopped the handle: let the reader find the error or EOF itself.
      onEvent({ readable: true, disconnect: true });
      return;
    }
    onEvent({ readable: ev?.readable === true, disconnect: ev?.disconnect === true });
  };
  handle = koffi.node.poll(
    fd,
    { readable: true, disconnect: true },
    onPoll as (ev: IKoffiPollEvents) => void,
  );
  active.set(fd, watch);
  return watch;
}

/** Throw unless epoll accepts `fd`: the same probe libuv's uv_poll_init makes. */
function assertPollable(fd: number): void {
  const c = libc();
  const ep = c.epoll_create1(LINUX.O_CLOEXEC);
  if (ep < 0) throw fail('epoll_create1', 'EPOLL_CLOEXEC');
  try {
    // struct epoll_event is {u32 events; u64 data}, packed to 12 bytes on x86_64 and 16 bytes
    // elsewhere; only `events` (offset 0) matters here, and 16 zeroed bytes cover both.
    const event = Buffer.alloc(16);
    koffi.encode(event, 0, 'uint32_t', LINUX.EPOLLIN);
    if (c.epoll_ctl(ep, LINUX.EPOLL_CTL_ADD, fd, event) < 0) {
      throw fail('epoll_ctl', `EPOLL_CTL_ADD, ${fd}`);
    }
  } finally {
    libc().close(ep);
  }
}
