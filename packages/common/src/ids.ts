/** Identifiers: short random ids for jobs, operations and migrations. */
import { randomBytes } from 'node:crypto';

/** A random id like `job-3f9a1c0b2d4e` (prefix + 12 hex digits). */
export function newId(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}
