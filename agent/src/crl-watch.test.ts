/** Tests of how a running agent picks up a new revocation list: read, watched, withdrawn. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, renameSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jsonLogger } from '@drover/common';
import { readCrl, watchCrl } from './crl-watch.js';

const PEM = (n: number): string => `-----BEGIN X509 CRL-----\nMIIB${n}\n-----END X509 CRL-----\n`;

test('readCrl: the PEM text, or null when missing or not a CRL (logged)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-crl-'));
  const lines: string[] = [];
  const log = jsonLogger((l) => lines.push(l), { level: 'debug' });
  try {
    const f = join(dir, 'crl.pem');
    assert.equal(readCrl(f, log), null);
    assert.equal(lines.length, 0, 'a CRL not pushed yet is not an error');
    writeFileSync(f, 'garbage');
    assert.equal(readCrl(f, log), null);
    assert.match(lines.join(''), /not a PEM CRL/);
    writeFileSync(f, PEM(1));
    assert.equal(readCrl(f, log), PEM(1));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('watchCrl: each change (also a rename over it) and the removal reach apply', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-crl-'));
  const f = join(dir, 'crl.pem');
  const seen: (string | null)[] = [];
  const stop = watchCrl(
    f,
    (c) => seen.push(c),
    jsonLogger(() => {}),
    50,
  );
  const until = async (n: number): Promise<void> => {
    for (let i = 0; i < 500 && seen.length < n; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(seen.length, n, JSON.stringify(seen));
  };
  try {
    writeFileSync(f, PEM(1));
    await until(1);
    writeFileSync(join(dir, 'next'), PEM(22));
    renameSync(join(dir, 'next'), f);
    await until(2);
    unlinkSync(f);
    await until(3);
    assert.deepEqual(seen, [PEM(1), PEM(22), null]);
  } finally {
    stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
