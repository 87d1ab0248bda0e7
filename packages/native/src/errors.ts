/** The native layer's error type: a failed system call, with its errno decoded to a name. */
import koffi from 'koffi';
import { DroverError, ErrorCode, type DroverErrorOptions } from '@drover/common';

/** Errno values that count as "try again later" for callers branching on `retryable`. */
const RETRYABLE_ERRNOS: ReadonlySet<string> = new Set(['EAGAIN', 'EINTR', 'ENOBUFS', 'ENOMEM']);

/** Names that win when several share one value (EWOULDBLOCK = EAGAIN, ENOTSUP = EOPNOTSUPP). */
const PREFERRED_NAMES: Readonly<Record<number, string>> = {
  11: 'EAGAIN',
  35: 'EDEADLK',
  95: 'EOPNOTSUPP',
};

let errnoNames: Map<number, string> | null = null;

/**
 * The symbolic name of a Linux errno value, e.g. `getErrnoName(3) === 'ESRCH'`.
 * Unknown values come back as `E<number>` (e.g. `E4095`) so messages stay greppable.
 */
export function getErrnoName(errno: number): string {
  if (errnoNames === null) {
    // koffi's table is the full Linux list (Node's os.constants.errno lacks ~50 of them).
    const names = new Map<number, string>();
    for (const [name, value] of Object.entries(koffi.os.errno)) {
      if (!names.has(value)) names.set(value, name);
    }
    for (const [value, name] of Object.entries(PREFERRED_NAMES)) names.set(Number(value), name);
    errnoNames = names;
  }
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** Options of a {@link SyscallError} beyond the base error's. */
export interface SyscallErrorOptions extends DroverErrorOptions {
  /** What the call was applied to, shown in parentheses: `pidfd_open(12345)`. */
  args?: string;
  /** Human text for the errno (libc's strerror); defaults to the errno name alone. */
  description?: string;
}

/**
 * A system call failed. Message form: `pidfd_open(12345): ESRCH (No such process)`.
 * `retryable` is true for EAGAIN, EINTR, ENOBUFS and ENOMEM.
 */
export class SyscallError extends DroverError {
  /** The call that failed, as named in its man page (`recvmsg`, `pidfd_open`). */
  readonly syscall: string;
  /** The raw errno value. */
  readonly errno: number;
  /** The errno's symbolic name, e.g. `'EAGAIN'`. */
  readonly errnoName: string;

  constructor(syscall: string, errno: number, options: SyscallErrorOptions = {}) {
    const errnoName = getErrnoName(errno);
    const text = options.description === undefined ? '' : ` (${options.description})`;
    const { args, description: _d, ...base } = options;
    super(ErrorCode.Syscall, `${syscall}(${args ?? ''}): ${errnoName}${text}`, {
      retryable: RETRYABLE_ERRNOS.has(errnoName),
      ...base,
      details: { syscall, errno, errnoName, ...base.details },
    });
    this.syscall = syscall;
    this.errno = errno;
    this.errnoName = errnoName;
  }
}
