/**
 * What the console server sends its page, in one place for both sides: the server's
 * `ClusterView` writes these, the page (`app.ts`) reads them. Types only: nothing runs here.
 */
import type {
  ClusterJob,
  ControllerReplies,
  HostStatus,
  ImageSet,
  OperationRecord,
} from '@drover/protocol';

/** One picture of the cluster, as the console's page receives it. */
export interface ConsoleSnapshot {
  /** When the controller answered (ISO time). */
  at: string;
  hosts: HostStatus[];
  jobs: ClusterJob[];
  ops: OperationRecord[];
  sets: ImageSet[];
  audit: ControllerReplies['audit']['entries'];
  /** What the last poll could not read (the controller not answering, a refusal). */
  error: string | null;
}

/** An agent event as the page receives it: its host and kind from the subject. */
export interface ConsoleEvent {
  host: string;
  kind: string;
  value: unknown;
}
