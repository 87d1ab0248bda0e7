/** Joining namespaces with setns(2), and the namespace type flags it takes. */
import { fail, libc } from './libc.js';

/** Namespace kinds as setns(2)/clone(2) flags; 0 (`ANY`) lets setns accept any kind of fd. */
export const NamespaceType = {
  ANY: 0,
  CLONE_NEWTIME: 0x00000080,
  CLONE_NEWNS: 0x00020000,
  CLONE_NEWCGROUP: 0x02000000,
  CLONE_NEWUTS: 0x04000000,
  CLONE_NEWIPC: 0x08000000,
  CLONE_NEWUSER: 0x10000000,
  CLONE_NEWPID: 0x20000000,
  CLONE_NEWNET: 0x40000000,
} as const;
export type NamespaceType = (typeof NamespaceType)[keyof typeof NamespaceType];

/**
 * The unshare(1) flags of a job's own namespaces: PID (its init forked, /proc mounted for it),
 * mount, UTS and IPC. What the agent starts a job in and CRIU restores it into; the tests' and
 * benchmarks' hand-made jobs use the same.
 */
export const JOB_NAMESPACE_FLAGS = ['--pid', '--fork', '--mount-proc', '--uts', '--ipc'] as const;

function typeName(nstype: number): string {
  const entry = Object.entries(NamespaceType).find(([, v]) => v === nstype);
  return entry === undefined ? `0x${nstype.toString(16)}` : entry[0];
}

/**
 * Move the calling thread into the namespace `fd` refers to (an open /proc/PID/ns/* file or a
 * pidfd). `nstype` (default ANY) makes the kernel check the fd's kind: a mismatch is EINVAL.
 * Only the main JS thread moves: libuv's worker threads (fs, dns.lookup) stay where they were.
 * Node is multi-threaded, so the kernel refuses mount and user namespaces here (EINVAL) and time
 * namespaces (EUSERS); a pid namespace applies to children spawned afterwards, not to us.
 */
export function setns(fd: number, nstype: number = NamespaceType.ANY): void {
  if (libc().setns(fd, nstype) < 0) throw fail('setns', `${fd}, ${typeName(nstype)}`);
}
