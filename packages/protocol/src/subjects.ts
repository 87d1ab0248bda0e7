/** NATS subjects: one place that names every subject Drover uses. */

/** Host ids and job ids: safe in subjects, paths and cgroup names. */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** What {@link ID_PATTERN} allows, for a human (validation errors say this). */
export const ID_WHAT =
  'an id: 1 to 63 letters, digits, "_", "." or "-", starting with a letter or digit';

const ROOT = 'drover';

/** Subjects of one agent's request/reply API: `drover.agent.<host>.<op>`. */
export function agentSubject(hostId: string, op: string): string {
  return `${ROOT}.agent.${hostId}.${op}`;
}

/** Wildcard that one agent serves. */
export function agentWildcard(hostId: string): string {
  return `${ROOT}.agent.${hostId}.>`;
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

/** An agent's events (job exits, state changes, migration progress): `drover.evt.<host>.<kind>`. */
export function eventSubject(hostId: string, kind: string): string {
  return `${ROOT}.evt.${hostId}.${kind}`;
}

/** Every event. */
export const EVENT_WILDCARD = `${ROOT}.evt.>`;

/** Every host's migration progress events (a {@link MigrationProgressEvent} each). */
export const MIGRATION_EVENT_WILDCARD = `${ROOT}.evt.*.migration`;

/** The op part of an agent subject, or null when the subject is not one of this host's. */
export function opOfSubject(hostId: string, subject: string): string | null {
  const prefix = `${ROOT}.agent.${hostId}.`;
  return subject.startsWith(prefix) ? subject.slice(prefix.length) : null;
}
