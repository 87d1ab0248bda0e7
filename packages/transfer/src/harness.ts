/**
 * Test-only helpers for this package's tests (temp dirs, image-set fixtures, hashing, a server
 * with a recording handler). Not exported from mod.ts and not used by library code.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { receiveFiles, type ReceiveOptions } from './receive.js';
import { StreamServer, type StreamReceiver, type ServerTlsOptions } from './server.js';
import type { Totals } from './messages.js';

/** A fresh temp dir under the OS temp dir; remove it with `removeAll`. */
export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `drover-transfer-${prefix}-`));
}

/** Remove dirs, ignoring errors. */
export async function removeAll(...dirs: string[]): Promise<void> {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
}

/** Write a file of `size` random bytes, in 4 MiB pieces. */
export async function writeRandom(path: string, size: number): Promise<void> {
  const parts: Buffer[] = [];
  for (let left = size; left > 0; left -= 4 << 20) parts.push(randomBytes(Math.min(left, 4 << 20)));
  await writeFile(path, Buffer.concat(parts));
}

/** sha256 (hex) of a file's contents. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** `{name: sha256}` of every file directly in `dir`. */
export async function hashTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(dir)).sort()) out[name] = await sha256File(join(dir, name));
  return out;
}

/** What a recording receiver saw: the totals, or the error, and the files it got. */
export interface ReceiverOutcome {
  receiver: StreamReceiver;
  totals?: Totals;
  error?: unknown;
}

/**
 * Expect `migrationId` on `server` with a handler that receives into `dir`, then answers with
 * `answer(totals, receiver)` (default: RESULT `{ok: true, totals}`). Resolves with the outcome.
 */
export function expectInto(
  server: StreamServer,
  migrationId: string,
  token: string,
  dir: string,
  options: ReceiveOptions & {
    answer?: (totals: Totals, receiver: StreamReceiver) => Promise<void>;
    /** With TLS: the only agent that may send (see `StreamServer.expect`). */
    peer?: string;
  } = {},
): Promise<ReceiverOutcome> {
  return new Promise((resolve) => {
    const expectOptions = options.peer === undefined ? {} : { peer: options.peer };
    server.expect(
      migrationId,
      token,
      async (receiver) => {
        let totals: Totals;
        try {
          totals = await receiveFiles(receiver, dir, options);
        } catch (error) {
          resolve({ receiver, error });
          throw error;
        }
        resolve({ receiver, totals });
        if (options.answer) await options.answer(totals, receiver);
        else await receiver.sendResult({ ok: true, totals });
      },
      expectOptions,
    );
  });
}

/** Listen on 127.0.0.1 with an ephemeral port. */
export function listenLocal(
  tls?: ServerTlsOptions,
  helloTimeoutMs?: number,
): Promise<StreamServer> {
  return StreamServer.listen({
    host: '127.0.0.1',
    port: 0,
    ...(tls ? { tls } : {}),
    ...(helloTimeoutMs === undefined ? {} : { helloTimeoutMs }),
  });
}
