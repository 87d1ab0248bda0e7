/** Persisted migration records under `<stateDir>/migrations/`, so a restarted agent finishes or rolls back. */
import { timingSafeEqual } from 'node:crypto';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import type { MigrationRecord, MigrationState } from '@drover/protocol';
import { sortedEntries } from '../job-store.js';
import { ticketDigest } from './authorization.js';

/** States after which nothing more happens to a migration. */
export const FINAL_STATES: readonly MigrationState[] = ['done', 'rolled-back', 'aborted'];

/**
 * Reads and writes migration records atomically. A record is written (to a temporary file,
 * renamed over the old one) on the calling thread: a few KiB into the page cache, no `fsync`,
 * so nothing waits for the disk, and a move saves its record at every phase on both sides —
 * through libuv's pool that was a mkdir, an open, a write, a close and a rename each, two thread
 * hand-offs apiece (docs/PERFORMANCE.md, _Bottlenecks found and fixed_, 15).
 */
export class MigrationStore {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'migrations');
  }

  // async: a failure rejects, never throws
  async save(r: MigrationRecord): Promise<void> {
    r.updatedAt = new Date().toISOString();
    this.writeAtomic(`${r.migrationId}.${r.role}.json`, JSON.stringify(r, null, 2));
  }

  /** Write `name` in the directory (0600) through a temporary file renamed over it. */
  private writeAtomic(name: string, text: string): void {
    const tmp = join(this.dir, `.${name}.tmp`);
    try {
      writeFileSync(tmp, text, { mode: 0o600 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // The directory is made at the first write (and again if it was removed meanwhile).
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      writeFileSync(tmp, text, { mode: 0o600 });
    }
    renameSync(tmp, join(this.dir, name));
  }

  /**
   * Keep the controller's ticket of a migration beside its record (0600, never in the record,
   * which replies carry): the source keeps the ticket to show the destination, the destination
   * its digest to check it. Saved before the record, so a record always has one.
   */
  // async: a failure rejects, never throws
  async saveTicket(
    migrationId: string,
    role: MigrationRecord['role'],
    ticket: string,
  ): Promise<void> {
    this.writeAtomic(
      `${migrationId}.${role}.ticket`,
      role === 'source' ? ticket : ticketDigest(ticket).toString('hex'),
    );
  }

  /** The ticket a source shows its destination for `migrationId`. */
  async ticket(migrationId: string): Promise<string> {
    try {
      return (await readFile(join(this.dir, `${migrationId}.source.ticket`), 'utf8')).trim();
    } catch (err) {
      throw new DroverError(
        ErrorCode.FailedPrecondition,
        `migration ${migrationId} has no ticket here (recorded by an older agent?)`,
        { cause: err, details: { migrationId } },
      );
    }
  }

  /**
   * The record of `migrationId` in whichever role this host played, if `ticket` is that
   * migration's: NOT_FOUND when there is no such migration here, PERMISSION_DENIED (nothing read
   * or changed) when the ticket is not its.
   */
  async findWithTicket(migrationId: string, ticket: string): Promise<MigrationRecord> {
    const rec = await this.find(migrationId);
    const kept = await readFile(join(this.dir, `${migrationId}.${rec.role}.ticket`), 'utf8').catch(
      () => null,
    );
    const expected =
      kept === null
        ? null
        : rec.role === 'source'
          ? ticketDigest(kept.trim())
          : Buffer.from(kept.trim(), 'hex');
    const given = ticketDigest(ticket);
    if (
      expected === null ||
      expected.length !== given.length ||
      !timingSafeEqual(expected, given)
    ) {
      throw new DroverError(
        ErrorCode.PermissionDenied,
        `not a party to migration ${migrationId}: the ticket is not its`,
        { details: { migrationId } },
      );
    }
    return rec;
  }

  async load(migrationId: string, role: MigrationRecord['role']): Promise<MigrationRecord> {
    try {
      return JSON.parse(
        await readFile(join(this.dir, `${migrationId}.${role}.json`), 'utf8'),
      ) as MigrationRecord;
    } catch (err) {
      throw new DroverError(
        ErrorCode.NotFound,
        `no ${role} migration ${migrationId} on this host`,
        {
          cause: err,
          details: { migrationId },
        },
      );
    }
  }

  /** The record of `migrationId` in whichever role this host played (source first). */
  async find(migrationId: string): Promise<MigrationRecord> {
    return this.load(migrationId, 'source').catch(() => this.load(migrationId, 'destination'));
  }

  async list(): Promise<MigrationRecord[]> {
    const out: MigrationRecord[] = [];
    for (const n of (await sortedEntries(this.dir)).filter((x) => x.endsWith('.json'))) {
      try {
        out.push(JSON.parse(await readFile(join(this.dir, n), 'utf8')) as MigrationRecord);
      } catch {
        // half-written by a crash before rename cannot happen; skip anything unreadable
      }
    }
    return out;
  }
}

/** Move a record to `state`, noting the phase on its timeline. */
export function advance(r: MigrationRecord, state: MigrationState, t0: number): void {
  r.state = state;
  mark(r, state, t0);
}

/**
 * Note a step inside a phase on the record's timeline (the state stays): where the frozen
 * window's milliseconds go (docs/MIGRATION.md, "Post-copy's frozen window").
 */
export function mark(r: MigrationRecord, step: string, t0: number): void {
  r.timeline.push({ phase: step, atMs: Math.round(performance.now() - t0) });
}

/** A fresh record: no figures yet, an empty timeline. */
export function newMigrationRecord(
  f: Pick<
    MigrationRecord,
    'migrationId' | 'jobId' | 'role' | 'source' | 'destination' | 'mode' | 'state'
  >,
): MigrationRecord {
  return {
    ...f,
    startedAt: new Date().toISOString(),
    updatedAt: '',
    timeline: [],
    stats: {
      frozenMs: 0,
      dumpMs: 0,
      transferMs: 0,
      restoreMs: 0,
      totalMs: 0,
      bytes: 0,
      files: 0,
      pages: 0,
    },
    error: null,
    note: null,
  };
}
