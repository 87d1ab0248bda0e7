/** Image pushes to the object store: made again while the store is briefly away, never otherwise. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ObjectFiles } from '@drover/bus';
import { DroverError, ErrorCode, isDroverError } from '@drover/common';
import type { Agent } from './agent.js';
import { openImage } from './image-crypto.js';
import { pushImage } from './image-sets.js';
import { ImageStore, MANIFEST_FILE, type ImageManifest } from './image-store.js';

const key = randomBytes(32);

/** An agent with one unsealed image `imageId` holding `pages-1.img`; the layer below is faked. */
async function agentWithImage(
  imageId: string,
  pages: Buffer,
): Promise<{ agent: Agent; warnings: string[]; done: () => void }> {
  const stateDir = mkdtempSync(join(tmpdir(), 'drover-push-'));
  const images = new ImageStore(stateDir);
  const dir = await images.create(imageId);
  writeFileSync(join(dir, 'pages-1.img'), pages);
  await images.writeManifest({ imageId, dir, sealed: false } as unknown as ImageManifest);
  const warnings: string[] = [];
  const log = { info: () => undefined, warn: (msg: string) => warnings.push(msg) };
  return {
    agent: { images, log } as unknown as Agent,
    warnings,
    done: () => rmSync(stateDir, { recursive: true, force: true }),
  };
}

/** An object store that cannot be opened `failures` times (with `error`), then keeps puts. */
function flakyStore(
  failures: number,
  error: () => Error,
): { objects: () => Promise<ObjectFiles>; opens: () => number; stored: Map<string, Buffer> } {
  let opens = 0;
  const stored = new Map<string, Buffer>();
  const files = {
    async put(name: string, data: AsyncIterable<Uint8Array>) {
      const parts: Uint8Array[] = [];
      for await (const c of data) parts.push(c);
      stored.set(name, Buffer.concat(parts));
      return { name, size: stored.get(name)!.length, digest: '' };
    },
  };
  return {
    objects: () => {
      opens += 1;
      return opens <= failures
        ? Promise.reject(error())
        : Promise.resolve(files as unknown as ObjectFiles);
    },
    opens: () => opens,
    stored,
  };
}

test('a bucket that cannot be opened for a while (NATS restarting) is opened again; the push completes', async () => {
  const pages = randomBytes(300_000);
  const { agent, warnings, done } = await agentWithImage('img-flaky', pages);
  try {
    const store = flakyStore(
      2,
      () =>
        new DroverError(ErrorCode.Unavailable, 'cannot open object bucket drover_images: timeout', {
          retryable: true,
        }),
    );
    const pushed = await pushImage(agent, store.objects, {
      imageId: 'img-flaky',
      prefix: 'set/job-a',
      key: key.toString('base64'),
    });
    assert.equal(store.opens() >= 3, true);
    assert.ok(warnings.includes('image upload interrupted; uploading the object again'));
    const file = pushed.files.find((f) => f.name === 'pages-1.img')!;
    assert.equal(file.size, pages.length);
    assert.equal(file.sha256, createHash('sha256').update(pages).digest('hex'));
    // What went up is the image sealed with the set's key under its object name.
    const parts: Uint8Array[] = [];
    const sealed = store.stored.get('set/job-a/pages-1.img')!;
    const source = (async function* () {
      yield sealed;
    })();
    for await (const c of openImage(source, key, 'set/job-a/pages-1.img')) parts.push(c);
    assert.ok(Buffer.concat(parts).equals(pages));
    // The manifest, a small file, is in the image's pack.
    assert.ok(store.stored.has('set/job-a/.pack'));
    assert.ok(!store.stored.has(`set/job-a/${MANIFEST_FILE}`));
  } finally {
    done();
  }
});

test('a store that refuses for good (not retryable) fails the push at once', async () => {
  const { agent, done } = await agentWithImage('img-refused', randomBytes(1000));
  try {
    const store = flakyStore(
      Infinity,
      () => new DroverError(ErrorCode.PermissionDenied, 'not allowed to open drover_images'),
    );
    await assert.rejects(
      pushImage(agent, store.objects, {
        imageId: 'img-refused',
        prefix: 'set/job-b',
        key: key.toString('base64'),
      }),
      (e) => isDroverError(e, 'PERMISSION_DENIED'),
    );
    // Tried once (the image's two files, both small, go up in its pack), not again.
    assert.equal(store.opens(), 1);
    assert.equal(store.stored.size, 0);
  } finally {
    done();
  }
});
