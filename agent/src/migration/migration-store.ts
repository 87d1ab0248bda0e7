/** Persisted migration records under `<stateDir>/migrations/`, so a restarted agent finishes or rolls back. */
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import type { MigrationRecord, MigrationState } from '@drover/protocol';

/** States after which nothing more happens to a migration. */
export const FINAL_STATES: readonly MigrationState[] = ['done', 'rolled-back', 'aborted'];

/** Reads and writes migration records atomically. */
export class MigrationStore {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'migrations');
  }

  async save(r: MigrationRecord): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    r.updatedAt = new Date().toISOString();
    const tmp = join(this.dir, `.${r.migrationId}.${r.role}.tmp`);
    await writeFile(tmp, JSON.stringify(r, null, 2), { mode: 0o600 });
    await rename(tmp, join(this.dir, `${r.migrationId}.${r.role}.json`));
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
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return [];
    }
    const out: MigrationRecord[] = [];
    for (const n of names.filter((x) => x.endsWith('.json')).sort()) {
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
  r.timeline.push({ phase: state, atMs: Math.round(performance.now() - t0) });
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
