/** Unit tests of MigrationStore: records and tickets written atomically, inline, and read back. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MigrationStore, newMigrationRecord } from './migration-store.js';

const record = () =>
  newMigrationRecord({
    migrationId: 'mig-1',
    jobId: 'job-1',
    role: 'source',
    source: 'h1',
    destination: 'h2',
    mode: 'stop-copy',
    state: 'preparing',
  });

test('a record and its ticket are written at once, the directory made as needed', async () => {
  const state = mkdtempSync(join(tmpdir(), 'migstore-'));
  try {
    const store = new MigrationStore(state);
    const r = record();
    const saving = store.save(r);
    // Written on the calling thread: there before the promise is awaited.
    assert.deepEqual(readdirSync(store.dir), ['mig-1.source.json']);
    await saving;
    await store.saveTicket('mig-1', 'source', 'tkt');
    assert.equal(await store.ticket('mig-1'), 'tkt');
    r.state = 'prepared';
    rmSync(store.dir, { recursive: true }); // removed meanwhile: made again
    await store.save(r);
    assert.equal((await store.load('mig-1', 'source')).state, 'prepared');
    assert.deepEqual(readdirSync(store.dir), ['mig-1.source.json'], 'no temporary file left');
  } finally {
    rmSync(state, { recursive: true, force: true });
  }
});

test('a failed write rejects (never throws at the call)', async () => {
  const state = mkdtempSync(join(tmpdir(), 'migstore-'));
  try {
    writeFileSync(join(state, 'migrations'), 'not a directory');
    const store = new MigrationStore(state);
    let saving: Promise<void> | undefined;
    assert.doesNotThrow(() => (saving = store.save(record())));
    await assert.rejects(saving!, { code: 'ENOTDIR' });
    await assert.rejects(store.saveTicket('mig-1', 'source', 't'), { code: 'ENOTDIR' });
  } finally {
    rmSync(state, { recursive: true, force: true });
  }
});
