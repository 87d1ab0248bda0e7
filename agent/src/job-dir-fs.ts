/**
 * Reading and writing files in directories a job can write to, without following a symlink the
 * job planted there. A job runs as root inside its namespaces and may replace any file of its
 * job directory (its logs, its exit status) by a symlink to, say, /etc/shadow: the agent must
 * never read or write through it.
 *
 * The directory is opened with O_NOFOLLOW|O_DIRECTORY and the file is opened through
 * `/proc/self/fd/<dirfd>/<name>` with O_NOFOLLOW: that is openat(2) (Node has no openat), so
 * neither the file nor the directory itself may be a symlink.
 */
import { constants } from 'node:fs';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_DIRECTORY, O_NONBLOCK, O_APPEND } =
  constants;

/** What {@link readNoFollow} read: the bytes and the file's whole size. */
export interface ReadResult {
  data: Buffer;
  size: number;
}

/** A file that is not a plain file (a symlink, a FIFO, a device) where the agent expects one. */
function notPlain(path: string, cause?: unknown): DroverError {
  return new DroverError(
    ErrorCode.FailedPrecondition,
    `${path} is not a regular file of its directory (a symlink or special file is never followed)`,
    { details: { path }, ...(cause !== undefined ? { cause } : {}) },
  );
}

async function withDir<T>(dir: string, fn: (viaFd: string) => Promise<T>): Promise<T> {
  let dh: FileHandle;
  try {
    dh = await open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw err;
    throw notPlain(dir, err);
  }
  try {
    return await fn(`/proc/self/fd/${dh.fd}`);
  } finally {
    await dh.close();
  }
}

/**
 * Read a regular file without following symlinks: at most `maxBytes`, from the end when `tail`
 * (the last bytes of a log), from byte `from` when given (the file's end if it is shorter).
 * ENOENT is thrown as is; a symlink or special file is FAILED_PRECONDITION.
 */
export async function readNoFollow(
  path: string,
  opts: { maxBytes: number; tail?: boolean; from?: number },
): Promise<ReadResult> {
  return withDir(dirname(path), async (dir) => {
    let fh: FileHandle;
    try {
      // O_NONBLOCK: a FIFO planted in place of the file must not hang the agent.
      fh = await open(`${dir}/${basename(path)}`, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw err;
      throw notPlain(path, err);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw notPlain(path);
      const start = opts.from === undefined ? 0 : Math.min(opts.from, st.size);
      const n = Math.min(st.size - start, opts.maxBytes);
      const data = Buffer.alloc(n);
      const from = opts.tail ? st.size - n : start;
      let got = 0;
      while (got < n) {
        const { bytesRead } = await fh.read(data, got, n - got, from + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return { data: data.subarray(0, got), size: st.size };
    } finally {
      await fh.close();
    }
  });
}

/**
 * Replace `path` atomically with `data`: a fresh temporary file (O_EXCL: never an existing file
 * or a symlink) renamed over it. A symlink at `path` is replaced, never written through.
 */
export async function writeAtomicNoFollow(
  path: string,
  data: string | Uint8Array,
  mode = 0o600,
): Promise<void> {
  await withDir(dirname(path), async (dir) => {
    const tmp = `${dir}/.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`;
    const fh = await open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
    try {
      await fh.writeFile(data);
    } catch (err) {
      await fh.close();
      await rm(tmp, { force: true });
      throw err;
    }
    await fh.close();
    await rename(tmp, `${dir}/${basename(path)}`);
  });
}

/** Create `path` if missing (append, never truncate) without following a symlink. */
export async function touchNoFollow(path: string, mode = 0o600): Promise<void> {
  await withDir(dirname(path), async (dir) => {
    let fh: FileHandle;
    try {
      fh = await open(
        `${dir}/${basename(path)}`,
        O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK,
        mode,
      );
    } catch (err) {
      throw notPlain(path, err);
    }
    try {
      if (!(await fh.stat()).isFile()) throw notPlain(path);
    } finally {
      await fh.close();
    }
  });
}

/**
 * Rewrite an existing regular file in place (same inode: a bind mount of it sees the new bytes)
 * without following a symlink. ENOENT is thrown as is.
 */
export async function rewriteNoFollow(path: string, data: string | Uint8Array): Promise<void> {
  await withDir(dirname(path), async (dir) => {
    let fh: FileHandle;
    try {
      fh = await open(`${dir}/${basename(path)}`, O_WRONLY | O_NOFOLLOW | O_NONBLOCK);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw err;
      throw notPlain(path, err);
    }
    try {
      if (!(await fh.stat()).isFile()) throw notPlain(path);
      const bytes = typeof data === 'string' ? Buffer.from(data) : data;
      await fh.truncate(0);
      await fh.write(bytes, 0, bytes.length, 0);
    } finally {
      await fh.close();
    }
  });
}
