/** Watches each job's root process through a pidfd and reports its exit. */
import { closeFd, pidfdOpen, waitForExit, type ChildStatus } from '@drover/native';
import type { Logger } from '@drover/common';

/** Called once when a watched root exits (status unknown when it was not our child). */
export type ExitHandler = (status: ChildStatus) => void;

/** pidfd watches by job id. */
export class Supervisor {
  private readonly watches = new Map<string, number>();

  constructor(private readonly log: Logger) {}

  /** Watch `pid` for job `jobId`; a root that is already gone reports at once. */
  watch(jobId: string, pid: number, onExit: ExitHandler): void {
    this.unwatch(jobId);
    let pidfd: number;
    try {
      pidfd = pidfdOpen(pid);
    } catch (err) {
      this.log.warn('root already gone when watched', { jobId, pid, err });
      queueMicrotask(() => onExit({ pid, exitCode: null, signal: null, coreDumped: false }));
      return;
    }
    this.watches.set(jobId, pidfd);
    waitForExit(pidfd).then(
      (status) => {
        if (this.watches.get(jobId) !== pidfd) return; // unwatched or replaced meanwhile
        this.watches.delete(jobId);
        closeFd(pidfd);
        onExit(status);
      },
      (err: unknown) => {
        this.log.error('waiting for job root failed', { jobId, pid, err });
        if (this.watches.get(jobId) === pidfd) {
          this.watches.delete(jobId);
          closeFd(pidfd);
        }
      },
    );
  }

  /** Stop watching `jobId` (its exit will not be reported). */
  unwatch(jobId: string): void {
    const fd = this.watches.get(jobId);
    if (fd === undefined) return;
    this.watches.delete(jobId);
    closeFd(fd);
  }

  /** Stop every watch. */
  close(): void {
    for (const id of [...this.watches.keys()]) this.unwatch(id);
  }
}
