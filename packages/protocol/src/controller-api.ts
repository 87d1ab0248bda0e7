/** The controller's request/reply API (`drover.ctl.<op>`), used by the `drover` CLI. */
import {
  AgentOps,
  JOB_SIGNALS,
  type AgentInfo,
  type JobInfo,
  type PreflightReport,
} from './agent-api.js';
import { MIGRATION_MODES, type MigrationRecord } from './migration-api.js';
import { ID_PATTERN } from './subjects.js';
import { int, obj, oneOf, opt, str, type Infer, type Schema } from './schema.js';

const id = (): Schema<string> => str({ min: 1, max: 63, pattern: ID_PATTERN });

/** The subject of controller operation `op`. */
export function controllerSubject(op: string): string {
  return `drover.ctl.${op}`;
}

/** Every controller subject. */
export const CONTROLLER_WILDCARD = 'drover.ctl.>';

/** A host as the controller sees it. */
export interface HostStatus {
  host: string;
  reachable: boolean;
  cordoned: boolean;
  lastSeen: string;
  info: AgentInfo;
}

/** A job as the controller sees it (with the host it runs on). */
export type ClusterJob = JobInfo;

/** One job of a drain, as it moves. */
export interface DrainItem {
  jobId: string;
  name: string;
  state: 'pending' | 'moving' | 'done' | 'failed' | 'skipped';
  destination: string | null;
  /** Why it was skipped or failed (preflight's reasons, the migration's error). */
  reason: string | null;
  migrationId: string | null;
  frozenMs: number | null;
}

/** A controller operation (migrate, drain, ...), persisted as it moves. */
export interface OperationRecord {
  opId: string;
  kind: 'migrate' | 'drain';
  state: 'pending' | 'running' | 'done' | 'failed';
  createdAt: string;
  updatedAt: string;
  /** What was asked. */
  request: Record<string, unknown>;
  /** Where the job went and why that host (placement's explanation). */
  placement: string | null;
  migration: MigrationRecord | null;
  error: { code: string; message: string } | null;
  /** drain: the host being emptied, and each job's outcome. */
  host?: string;
  items?: DrainItem[];
}

/** Controller operations: their request schemas. */
export const ControllerOps = {
  hosts: obj({}),
  jobs: obj({ host: opt(id()) }),
  run: obj({ ...AgentOps.run.shape, host: opt(id()) }),
  inspect: obj({ jobId: id() }),
  logs: obj({
    jobId: id(),
    stream: opt(oneOf(['stdout', 'stderr'] as const)),
    tailBytes: opt(int({ min: 1, max: 1024 * 1024 })),
  }),
  signal: obj({ jobId: id(), signal: oneOf(JOB_SIGNALS) }),
  stop: obj({ jobId: id() }),
  migrate: obj({ jobId: id(), to: opt(id()), mode: opt(oneOf(MIGRATION_MODES)) }),
  preflight: obj({ jobId: id(), to: opt(id()) }),
  drain: obj({ host: id(), parallel: opt(int({ min: 1, max: 16 })) }),
  cordon: obj({ host: id() }),
  uncordon: obj({ host: id() }),
  ops: obj({ limit: opt(int({ min: 1, max: 1000 })) }),
  status: obj({ opId: id() }),
  adopt: obj({
    host: id(),
    pid: int({ min: 2, max: 4194304 }),
    name: opt(str({ min: 1, max: 128 })),
  }),
  events: obj({ sinceSeq: opt(int()), limit: opt(int({ min: 1, max: 10000 })), host: opt(id()) }),
} as const;

export type ControllerOp = keyof typeof ControllerOps;
export type ControllerRequest<Op extends ControllerOp> = Infer<(typeof ControllerOps)[Op]>;

/** Replies of the controller operations. */
export interface ControllerReplies {
  hosts: { hosts: HostStatus[] };
  jobs: { jobs: ClusterJob[] };
  run: ClusterJob & { placement: string };
  inspect: ClusterJob & {
    processes: { pid: number; nspid: number[]; state: string; cmdline: string[] }[];
  };
  logs: { data: string; truncated: boolean; sizeBytes: number };
  signal: ClusterJob;
  stop: ClusterJob;
  migrate: OperationRecord;
  drain: OperationRecord;
  preflight: PreflightReport;
  cordon: HostStatus;
  uncordon: HostStatus;
  ops: { ops: OperationRecord[] };
  status: OperationRecord;
  adopt: ClusterJob;
  events: { events: { seq: number; subject: string; time: string; value: unknown }[] };
}

/** True if `op` names a controller operation. */
export function isControllerOp(op: string): op is ControllerOp {
  return Object.hasOwn(ControllerOps, op);
}
