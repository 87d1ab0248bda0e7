/** The agent API's image-set requests: a file's place in its image's pack is part of the record. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentOps } from './agent-api.js';

const base = { imageId: 'img-1', prefix: 'set-1/job-1', key: `${'A'.repeat(43)}=` };
const file = { name: 'core-1.img', size: 300, sha256: 'a'.repeat(64) };

test('image-fetch and image-decode take files stored alone and files in the pack', () => {
  const files = [file, { ...file, name: 'mm-1.img', pack: { offset: 0, length: 412 } }];
  assert.deepEqual(AgentOps['image-fetch'].parse({ ...base, files }).files, files);
  const { imageId: _, ...decode } = base;
  assert.deepEqual(AgentOps['image-decode'].parse({ ...decode, files }).files, files);
});

test('a place in the pack is an offset and a length of at least one byte, nothing else', () => {
  for (const pack of [
    { offset: -1, length: 10 },
    { offset: 0, length: 0 },
    { offset: 0 },
    { offset: 0, length: 10, object: 'other' },
  ]) {
    assert.throws(
      () => AgentOps['image-fetch'].parse({ ...base, files: [{ ...file, pack }] }),
      (e: unknown) => (e as { code?: string }).code === 'INVALID_ARGUMENT',
      JSON.stringify(pack),
    );
  }
});
