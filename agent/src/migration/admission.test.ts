import { test } from 'node:test';
import assert from 'node:assert/strict';
import { admit } from './admission.js';

const MiB = 2 ** 20;
const shm = (freeMiB: number) => ({ root: '/dev/shm', freeBytes: freeMiB * MiB });

test('stop-copy with images in tmpfs needs the job twice: the restore reads them into memory', () => {
  const base = { mode: 'stop-copy' as const, memoryBytes: 1024 * MiB, scratch: shm(4096) };
  assert.equal(admit({ ...base, availableBytes: 2100 * MiB }), null);
  const r = admit({ ...base, availableBytes: 1500 * MiB });
  assert.ok(r);
  assert.match(r.why, /not enough memory \(needs 2048 MiB at the restore's peak/);
  assert.deepEqual(r.details, {
    reason: 'capacity',
    neededBytes: 2048 * MiB,
    availableBytes: 1500 * MiB,
  });
});

test('post-copy images hold no pages, and images on disk take no memory', () => {
  const job = { memoryBytes: 1024 * MiB, availableBytes: 1500 * MiB };
  assert.equal(admit({ ...job, mode: 'post-copy', scratch: shm(10) }), null);
  assert.equal(admit({ ...job, mode: 'stop-copy', scratch: null }), null);
  const r = admit({ ...job, mode: 'post-copy', scratch: null, availableBytes: 1000 * MiB });
  assert.match(r!.why, /^not enough memory \(needs 1024 MiB, 1000 MiB available\)$/);
});

test('the tmpfs itself must hold the images (a size-limited /dev/shm)', () => {
  const r = admit({
    mode: 'stop-copy',
    memoryBytes: 1024 * MiB,
    availableBytes: 8192 * MiB,
    scratch: shm(512),
  });
  assert.match(r!.why, /its images \(1024 MiB\) do not fit in \/dev\/shm \(512 MiB free\)/);
  assert.equal(r!.details.reason, 'capacity');
});

test('an available figure below zero (reserve above MemAvailable) reads as 0 MiB', () => {
  const r = admit({
    mode: 'stop-copy',
    memoryBytes: MiB,
    availableBytes: -5 * MiB,
    scratch: shm(100),
  });
  assert.match(r!.why, /, 0 MiB available\)$/);
});
