/**
 * Drover's identities: a role and a name, carried in a TLS client certificate's subject
 * (`O=drover, OU=<role>, CN=<name>`). Pure data, no I/O.
 */

/**
 * The roles: the controller commands agents; an agent serves its own subjects; an operator may
 * change the cluster through the controller; a viewer may only look.
 */
export const ROLES = ['controller', 'agent', 'operator', 'viewer'] as const;
export type Role = (typeof ROLES)[number];

/** True when `s` names a role. */
export function isRole(s: string): s is Role {
  return (ROLES as readonly string[]).includes(s);
}

/**
 * Names of identities (host ids of agents, operators' names): one subject token, so no dots —
 * a dotted host id would slip past the `*` wildcards the permissions are written with.
 */
export const IDENTITY_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

/** The organization of every Drover certificate subject. */
export const CERT_ORGANIZATION = 'drover';

/** One identity: a role and a name (the agent's host id, the operator's name, ...). */
export interface Identity {
  readonly role: Role;
  readonly name: string;
}

/**
 * The NATS user of an identity: its certificate's subject as nats-server prints it
 * (RFC 2253, most specific first), which `verify_and_map` matches.
 */
export function natsUserOf(id: Identity): string {
  return `CN=${id.name},OU=${id.role},O=${CERT_ORGANIZATION}`;
}

/**
 * The identity a certificate subject names (OU = role, CN = name, O = drover), or null if it is
 * none of ours. `subject` is one `KEY=value` per line, as Node's `X509Certificate.subject` gives it.
 */
export function identityOfSubject(subject: string): Identity | null {
  const f = new Map<string, string>();
  for (const line of subject.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) f.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim());
  }
  const role = f.get('OU') ?? '';
  const name = f.get('CN') ?? '';
  if (f.get('O') !== CERT_ORGANIZATION || !isRole(role) || !IDENTITY_NAME_PATTERN.test(name))
    return null;
  return { role, name };
}
