/** Identifiers: short random ids for jobs, operations and migrations. */
import { randomBytes } from 'node:crypto';

/** A random id like `job-3f9a1c0b2d4e` (prefix + 12 hex digits). */
export function newId(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

/** A fresh secret: `bytes` random bytes as hex (64 digits by default), e.g. a migration ticket. */
export function newSecret(bytes = 32): string {
  return randomBytes(bytes).toString('hex');
}
