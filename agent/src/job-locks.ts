/** Per-job serialization: one operation at a time on each job, in the order they asked. */

/** A queue of operations per job id. */
export class JobLocks {
  private readonly tails = new Map<string, Promise<unknown>>();

  /** Run `fn` once every earlier operation on `jobId` has settled. */
  withJob<T>(jobId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(jobId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.tails.set(jobId, tail);
    void tail.then(() => {
      if (this.tails.get(jobId) === tail) this.tails.delete(jobId);
    });
    return next;
  }

  /**
   * {@link withJob} over several jobs at once, taken in sorted order (why: two callers each holding
   * a job the other waits for would wait forever).
   */
  withJobs<T>(jobIds: readonly string[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(jobIds)].sort();
    const take = (i: number): Promise<T> =>
      i === sorted.length ? fn() : this.withJob(sorted[i]!, () => take(i + 1));
    return take(0);
  }
}
