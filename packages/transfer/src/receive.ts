/**
 * receiveFiles: the receiving half of an image-set stream — FILE/DATA/FILE_END/DONE frames into
 * files in a directory, each checked (size, sha256) and the totals checked at DONE.
 */
import { createHash, type Hash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { TransferError } from './errors.js';
import type { Frame } from './frame.js';
import {
  doneSchema,
  fileEndSchema,
  fileNameProblem,
  fileSchema,
  parseJsonFrame,
  protocolError,
  type FileHeader,
  type Totals,
} from './messages.js';
import { ProgressMeter, type ProgressCallback } from './progress.js';
import { asStreamError } from './channel.js';
import type { StreamReceiver } from './server.js';

/** Writes of one file in flight at most (each one frame, ≤ 1 MiB usually). */
const MAX_PENDING_WRITES = 4;

/**
 * Files up to this size (most of an image set: CRIU's small images) are gathered in memory and
 * written on the calling thread once their checksum matched (the receiver writes into tmpfs
 * scratch or a state directory's page cache): an asynchronous open, write and close would cost
 * two thread hand-offs each through libuv's pool, per file (docs/PERFORMANCE.md, _Bottlenecks
 * found and fixed_, 15).
 */
const SMALL_FILE_BYTES = 1024 * 1024;

/** Default: a link with no frame (data or PING) for this long has failed. */
export const DEFAULT_IDLE_TIMEOUT_MS = 10_000;

/** Options of `receiveFiles`. */
export interface ReceiveOptions {
  /** Called with running totals (throttled, and at each completed file). */
  onProgress?: ProgressCallback;
  /** Fail with a `timeout` error after this long without any frame. Default 10 s. */
  idleTimeoutMs?: number;
}

interface OpenFile extends FileHeader {
  /** null: a small file, gathered in `chunks` and written at FILE_END. */
  handle: FileHandle | null;
  chunks: Buffer[];
  hash: Hash;
  received: number;
  frame: Frame;
  /** Writes not yet awaited, oldest first. */
  writes: Promise<unknown>[];
}

/**
 * Receive an image set into `dir` (which must exist): each FILE becomes `dir/<name>`, created
 * exclusively with mode 0600 (never overwriting, never following a symlink). Resolves with the
 * totals on a valid DONE. On any violation, an ERROR frame goes to the sender (best effort) and
 * the promise rejects with the stream's first error (a TransferError, the sender's remote error,
 * or a local I/O error). Files already written are left in place: the caller owns `dir` and must
 * treat it as garbage unless this promise resolved.
 */
export async function receiveFiles(
  receiver: StreamReceiver,
  dir: string,
  options: ReceiveOptions = {},
): Promise<Totals> {
  const channel = receiver.channel;
  const idleMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const meter = new ProgressMeter(options.onProgress);
  const seen = new Set<string>();
  let current: OpenFile | null = null;
  try {
    for (;;) {
      const frame = await channel.next(idleMs);
      switch (frame.type) {
        case 'FILE': {
          if (current) throw protocolError(frame, `FILE while ${current.name} is still open`);
          const header = parseJsonFrame(frame, fileSchema);
          const problem = fileNameProblem(header.name);
          if (problem) throw protocolError(frame, problem);
          if (seen.has(header.name)) throw protocolError(frame, `${header.name} sent twice`);
          seen.add(header.name);
          const handle =
            header.size <= SMALL_FILE_BYTES
              ? null
              : await open(join(dir, header.name), 'wx', 0o600);
          current = {
            ...header,
            handle,
            chunks: [],
            hash: createHash('sha256'),
            received: 0,
            frame,
            writes: [],
          };
          break;
        }
        case 'DATA': {
          if (!current) throw protocolError(frame, 'DATA outside a file');
          const n = frame.payload.length;
          if (current.received + n > current.size) {
            throw protocolError(
              frame,
              `${current.name}: more than the announced ${current.size} bytes`,
            );
          }
          // Positional writes, several in flight: hashing the next frames overlaps the
          // writes (which run on libuv's thread pool). At most MAX_PENDING_WRITES wait.
          if (current.handle) {
            const write = current.handle.write(frame.payload, 0, n, current.received);
            write.catch(() => undefined); // awaited below or at FILE_END
            current.writes.push(write);
          } else {
            current.chunks.push(frame.payload as Buffer);
          }
          current.hash.update(frame.payload);
          current.received += n;
          if (current.writes.length >= MAX_PENDING_WRITES) await current.writes.shift();
          meter.addBytes(n);
          break;
        }
        case 'FILE_END': {
          if (!current) throw protocolError(frame, 'FILE_END outside a file');
          const { sha256 } = parseJsonFrame(frame, fileEndSchema);
          if (current.received !== current.size) {
            throw protocolError(
              frame,
              `${current.name}: ${current.received} of ${current.size} bytes before FILE_END`,
            );
          }
          await Promise.all(current.writes.splice(0));
          const actual = current.hash.digest('hex');
          if (actual !== sha256) {
            throw new TransferError(`${current.name}: sha256 mismatch`, {
              kind: 'checksum',
              frame: 'FILE_END',
              offset: frame.offset,
            });
          }
          const done = current;
          current = null;
          if (done.handle) {
            await done.handle.close();
          } else {
            // Created exclusively (never overwriting, never following a symlink), as above.
            writeFileSync(
              join(dir, done.name),
              done.chunks.length === 1 ? done.chunks[0]! : Buffer.concat(done.chunks),
              { flag: 'wx', mode: 0o600 },
            );
          }
          meter.fileDone();
          break;
        }
        case 'DONE': {
          if (current) throw protocolError(frame, `DONE while ${current.name} is still open`);
          const totals = parseJsonFrame(frame, doneSchema);
          if (totals.files !== meter.files || totals.bytes !== meter.bytes) {
            throw protocolError(
              frame,
              `sender counted ${totals.files} files/${totals.bytes} bytes, ` +
                `received ${meter.files}/${meter.bytes}`,
            );
          }
          meter.reportNow();
          return totals;
        }
        default:
          throw protocolError(frame, `${frame.type} not allowed while receiving files`);
      }
    }
  } catch (err) {
    // Nothing of ours is still writing once the caller hears of the failure.
    await current?.handle?.close().catch(() => {});
    throw channel.fail(asStreamError(err), true);
  }
}
