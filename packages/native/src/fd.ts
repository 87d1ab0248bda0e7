/** Plain file-descriptor flags and lifetime: O_NONBLOCK, FD_CLOEXEC and close. */
import { fail, libc, LINUX } from './libc.js';
import { stopWatchOf } from './poll.js';

/** Turn O_NONBLOCK on or off for `fd` (fcntl F_GETFL/F_SETFL). */
export function setNonBlocking(fd: number, on: boolean): void {
  const c = libc();
  const flags = c.fcntl(fd, LINUX.F_GETFL);
  if (flags < 0) throw fail('fcntl', `${fd}, F_GETFL`);
  const next = on ? flags | LINUX.O_NONBLOCK : flags & ~LINUX.O_NONBLOCK;
  if (next === flags) return;
  if (c.fcntl(fd, LINUX.F_SETFL, 'int', next) < 0) throw fail('fcntl', `${fd}, F_SETFL`);
}

/** Turn FD_CLOEXEC on or off for `fd` (fcntl F_GETFD/F_SETFD). */
export function setCloexec(fd: number, on: boolean): void {
  const c = libc();
  const flags = c.fcntl(fd, LINUX.F_GETFD);
  if (flags < 0) throw fail('fcntl', `${fd}, F_GETFD`);
  const next = on ? flags | LINUX.FD_CLOEXEC : flags & ~LINUX.FD_CLOEXEC;
  if (next === flags) return;
  if (c.fcntl(fd, LINUX.F_SETFD, 'int', next) < 0) throw fail('fcntl', `${fd}, F_SETFD`);
}

/**
 * Close `fd`, stopping its watchReadable watch first if it has one. Throws SyscallError
 * (EBADF) for an fd that is not open. EINTR counts as closed: Linux always releases the
 * descriptor, so retrying could close someone else's new fd.
 */
export function closeFd(fd: number): void {
  stopWatchOf(fd);
  if (libc().close(fd) < 0) {
    const err = fail('close', fd);
    if (err.errnoName !== 'EINTR') throw err;
  }
}
