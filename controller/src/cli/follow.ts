/** Following migrations while a command runs: progress events from NATS into progress output. */
import {
  eventSubject,
  MIGRATION_EVENT_WILDCARD,
  type MigrationProgressEvent,
} from '@drover/protocol';
import type { Watcher } from './context.js';
import { MigrationProgress } from './progress.js';

/** Where progress goes: a stream (stderr), and whether it is a terminal. */
export interface ProgressSink {
  isTTY?: boolean;
  write(text: string): unknown;
}

/** Progress of one job's migration: a bar on a terminal, a line a second otherwise. */
export function followMigration(jobId: string, sink: ProgressSink): Watcher {
  return (bus) => {
    const progress = new MigrationProgress(jobId, {
      tty: sink.isTTY === true,
      write: (t) => void sink.write(t),
    });
    const unsubscribe = bus.subscribe(MIGRATION_EVENT_WILDCARD, (_s, v) =>
      progress.onEvent(v as MigrationProgressEvent),
    );
    return () => {
      unsubscribe();
      progress.finish();
    };
  };
}

/** Progress of every migration off `host` (a drain): plain lines per job, every 2 s at most. */
export function followDrain(host: string, sink: ProgressSink): Watcher {
  return (bus) => {
    const jobs = new Map<string, MigrationProgress>();
    const unsubscribe = bus.subscribe(eventSubject(host, 'migration'), (_s, v) => {
      const e = v as MigrationProgressEvent;
      let p = jobs.get(e.jobId);
      if (p === undefined) {
        p = new MigrationProgress(e.jobId, {
          tty: false,
          write: (t) => void sink.write(t),
          lineEveryMs: 2000,
        });
        jobs.set(e.jobId, p);
      }
      p.onEvent(e);
    });
    return unsubscribe;
  };
}
