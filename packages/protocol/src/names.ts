/**
 * Every NATS name Drover uses, in one place: the subjects (agents', controllers', heartbeats,
 * liveness probes, events, audit), the JetStream streams, and the key-value and object buckets.
 * Who may use which is in roles.ts; what travels on them in the *-api.ts files.
 */
import { IDENTITY_NAME_PATTERN, isRole, type Identity } from './identity.js';

/** Host ids and job ids: safe in subjects, paths and cgroup names. */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** What {@link ID_PATTERN} allows, for a human (validation errors say this). */
export const ID_WHAT =
  'an id: 1 to 63 letters, digits, "_", "." or "-", starting with a letter or digit';

const ROOT = 'drover';

// ---- agents ----

/** Subjects of one agent's request/reply API: `drover.agent.<host>.<op>`. */
export function agentSubject(hostId: string, op: string): string {
  return `${ROOT}.agent.${hostId}.${op}`;
}

/** Wildcard that one agent serves. */
export function agentWildcard(hostId: string): string {
  return `${ROOT}.agent.${hostId}.>`;
}

/** The op part of an agent subject, or null when the subject is not one of this host's. */
export function opOfSubject(hostId: string, subject: string): string | null {
  const prefix = `${ROOT}.agent.${hostId}.`;
  return subject.startsWith(prefix) ? subject.slice(prefix.length) : null;
}

/** An agent's heartbeat: `drover.hb.<host>`. */
export function heartbeatSubject(hostId: string): string {
  return `${ROOT}.hb.${hostId}`;
}

/** Every heartbeat. */
export const HEARTBEAT_WILDCARD = `${ROOT}.hb.*`;

/**
 * An agent's liveness probe: `drover.live.<host>`, answered by the agent's heartbeat thread (a
 * {@link LivenessReply}), so an agent whose main thread is busy still answers. Outside the
 * agent's API wildcard: the API is served by the main thread.
 */
export function livenessSubject(hostId: string): string {
  return `${ROOT}.live.${hostId}`;
}

/** Every agent's liveness probe. */
export const LIVENESS_WILDCARD = `${ROOT}.live.*`;

// ---- events ----

/** What every event subject starts with (the event log captures everything under it). */
export const EVENT_SUBJECT_PREFIX = `${ROOT}.evt.`;

/** An agent's events (job exits, state changes, migration progress): `drover.evt.<host>.<kind>`. */
export function eventSubject(hostId: string, kind: string): string {
  return `${EVENT_SUBJECT_PREFIX}${hostId}.${kind}`;
}

/** Every event of one host: `drover.evt.<host>.>`. */
export function hostEventWildcard(hostId: string): string {
  return `${EVENT_SUBJECT_PREFIX}${hostId}.>`;
}

/** Every event. */
export const EVENT_WILDCARD = `${EVENT_SUBJECT_PREFIX}>`;

/** Every host's migration progress events (a {@link MigrationProgressEvent} each). */
export const MIGRATION_EVENT_WILDCARD = `${EVENT_SUBJECT_PREFIX}*.migration`;

// ---- the controller ----

/**
 * The subject of controller operation `op` asked by `caller`: `drover.ctl.<op>.<role>.<name>`.
 * NATS lets each identity publish only with its own role and name (roles.ts), so the controller
 * knows who asks from the subject alone. Without a caller (a client with no certificate, on a
 * NATS without TLS) the subject is `drover.ctl.<op>`. `caller` may hold `*` wildcards.
 */
export function controllerSubject(
  op: string,
  caller?: { readonly role: string; readonly name: string },
): string {
  return caller ? `${ROOT}.ctl.${op}.${caller.role}.${caller.name}` : `${ROOT}.ctl.${op}`;
}

/** Every controller subject. */
export const CONTROLLER_WILDCARD = `${ROOT}.ctl.>`;

/** Who asked, as a controller subject names it (null when it names nobody). */
export function parseControllerSubject(subject: string): {
  op: string;
  caller: Identity | null;
} | null {
  const t = subject.split('.');
  if (t[0] !== ROOT || t[1] !== 'ctl' || t[2] === undefined) return null;
  if (t.length === 3) return { op: t[2], caller: null };
  const [role, name] = [t[3] ?? '', t[4] ?? ''];
  if (t.length !== 5 || !isRole(role) || !IDENTITY_NAME_PATTERN.test(name)) return null;
  return { op: t[2], caller: { role, name } };
}

// ---- audit ----

/** Subjects of the audit stream: `drover.audit.<role>.<name>.<op>`; only controllers publish there. */
export const AUDIT_SUBJECT_PREFIX = `${ROOT}.audit.`;

/** The caller token pair of a request that named nobody (no certificate, plain NATS). */
export const ANONYMOUS_CALLER = { role: 'anonymous', name: 'anonymous' } as const;

/** The audit subject of `op` asked by `caller` (wildcards allowed, for filters). */
export function auditSubject(
  caller: { readonly role: string; readonly name: string } | null,
  op: string,
): string {
  const c = caller ?? ANONYMOUS_CALLER;
  return `${AUDIT_SUBJECT_PREFIX}${c.role}.${c.name}.${op}`;
}

// ---- JetStream streams and buckets ----

/** The stream of the cluster's history: every event (`drover.evt.>`). */
export const EVENT_STREAM = 'DROVER_EVENTS';

/** The stream of the audit records (`drover.audit.>`); only controllers write it. */
export const AUDIT_STREAM = 'DROVER_AUDIT';

/** The JetStream object bucket that holds image sets (the controller creates it). */
export const IMAGE_SET_BUCKET = 'drover_images';

/** The controller's key-value buckets (docs/ARCHITECTURE.md, "The controller and the CLI"). */
export const CONTROLLER_BUCKETS = {
  /** The leadership lease. */
  leases: 'drover_leases',
  /** host → its cordon. */
  cordons: 'drover_cordons',
  /** opId → the operation's record. */
  ops: 'drover_ops',
  /** image-set name → its record. */
  imageSets: 'drover_imagesets',
  /** image-set name → its key. */
  imageKeys: 'drover_imagekeys',
  /** The hosts the cluster has. */
  hosts: 'drover_hosts',
  /** The job network's addresses and names in use. */
  addresses: 'drover_addresses',
  names: 'drover_names',
} as const;
