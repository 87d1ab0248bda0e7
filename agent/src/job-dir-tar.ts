/**
 * A job directory's archive written in-process, in the format `tar --extract` reads (POSIX ustar,
 * with a pax header for a name too long for it): at a cluster's cut every dump archives its job's
 * directory while the job is frozen, and a `tar` child cost the agent a fork of itself (30-100 ms
 * of a ~200 MB process on a busy host) for directories of a few files. Directories, regular files,
 * symlinks (never followed) and hard links (a second name of a file is a link to the first, as
 * GNU tar makes it) are archived; anything else (a FIFO, a device, a socket) and a
 * file with holes make {@link archiveDir} answer false so that the caller falls back to `tar`
 * itself (which keeps the holes: `--sparse`).
 */
import { constants } from 'node:fs';
import { lstat, open, readdir, readlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

const BLOCK = 512;
const RECORD = 20 * BLOCK;
const CHUNK = 256 * 1024;
/** ustar's size field: 11 octal digits. */
const MAX_SIZE = 8 ** 11 - 1;

/** One entry of the archive, as read from the directory. */
interface Entry {
  /** `./a/b` (a directory: `./a/`). */
  name: string;
  path: string;
  type: '0' | '1' | '2' | '5';
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size: number;
  linkname: string;
}

/**
 * Archive the contents of `dir` into a new file `archive` (entries `./`, `./name`, ...), leaving
 * out the top-level names `exclude` says (`exclude(name)`). Returns false, with nothing written,
 * when the directory holds something only `tar` can archive.
 */
export async function archiveDir(
  dir: string,
  archive: string,
  exclude: (topName: string) => boolean = () => false,
): Promise<boolean> {
  const entries = await listEntries(dir, exclude);
  if (entries === null) return false;
  const out = await open(archive, 'wx', 0o600);
  try {
    let written = 0;
    for (const e of entries) {
      const head = headers(e);
      await out.write(head);
      written += head.length;
      if (e.type === '0' && e.size > 0) written += await copyInto(out, e);
    }
    // Two zero blocks end an archive, padded to tar's record size (20 blocks) as GNU tar does.
    const end = written + 2 * BLOCK;
    await out.write(Buffer.alloc(2 * BLOCK + ((RECORD - (end % RECORD)) % RECORD)));
  } finally {
    await out.close();
  }
  return true;
}

/** Every entry under `dir`, parents before children, names sorted; null if one is not archivable. */
async function listEntries(
  dir: string,
  exclude: (topName: string) => boolean,
): Promise<Entry[] | null> {
  const out: Entry[] = [];
  const links = new Map<string, string>();
  const walk = async (path: string, name: string): Promise<boolean> => {
    const st = await lstat(path, { bigint: true });
    const base = {
      name,
      path,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtime: Number(st.mtimeMs / 1000n),
      size: 0,
      linkname: '',
    };
    if (st.isDirectory()) {
      out.push({ ...base, name: name.endsWith('/') ? name : `${name}/`, type: '5' });
      const prefix = name === './' ? './' : `${name}/`;
      for (const child of (await readdir(path)).sort()) {
        if (name === './' && exclude(child)) continue;
        if (!(await walk(join(path, child), prefix + child))) return false;
      }
      return true;
    }
    if (st.isSymbolicLink()) {
      out.push({ ...base, type: '2', linkname: await readlink(path) });
      return true;
    }
    if (!st.isFile()) return false;
    if (st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      const first = links.get(key);
      if (first !== undefined) {
        out.push({ ...base, type: '1', linkname: first });
        return true;
      }
      links.set(key, name);
    }
    if (st.size > BigInt(MAX_SIZE)) return false;
    // A file with holes: `tar --sparse` keeps them; written out here it could fill the tmpfs.
    if (st.blocks * 512n < st.size) return false;
    out.push({ ...base, type: '0', size: Number(st.size) });
    return true;
  };
  return (await walk(dir, './')) ? out : null;
}

/** A file's bytes into the archive, padded to a block (the size its header said); bytes written. */
async function copyInto(out: FileHandle, e: Entry): Promise<number> {
  const f = await open(e.path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, e.size));
    let left = e.size;
    while (left > 0) {
      const { bytesRead } = await f.read(buf, 0, Math.min(buf.length, left), null);
      // A file that shrank while archived (a frozen job cannot do that) is padded with zeros.
      if (bytesRead === 0) buf.fill(0);
      const n = bytesRead === 0 ? Math.min(buf.length, left) : bytesRead;
      await out.write(buf, 0, n);
      left -= n;
    }
  } finally {
    await f.close();
  }
  const pad = (BLOCK - (e.size % BLOCK)) % BLOCK;
  if (pad) await out.write(Buffer.alloc(pad));
  return e.size + pad;
}

/** The header block(s) of `e`: a pax header first when a name does not fit ustar's fields. */
function headers(e: Entry): Buffer {
  const pax: string[] = [];
  const name = fitName(e.name);
  if (name === null) pax.push(paxRecord('path', e.name));
  if (Buffer.byteLength(e.linkname) > 100) pax.push(paxRecord('linkpath', e.linkname));
  const main = header({
    ...e,
    name: name ?? { name: e.name.slice(0, 99), prefix: '' },
    linkname: Buffer.byteLength(e.linkname) > 100 ? '' : e.linkname,
  });
  if (pax.length === 0) return main;
  const body = Buffer.from(pax.join(''));
  const paxHeader = header({
    name: { name: 'PaxHeader', prefix: '' },
    type: 'x',
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: e.mtime,
    size: body.length,
    linkname: '',
  });
  const pad = Buffer.alloc((BLOCK - (body.length % BLOCK)) % BLOCK);
  return Buffer.concat([paxHeader, body, pad, main]);
}

/** `name` split into ustar's name (100) and prefix (155) fields, or null when it cannot be. */
function fitName(name: string): { name: string; prefix: string } | null {
  if (Buffer.byteLength(name) <= 100) return { name, prefix: '' };
  for (let i = name.indexOf('/'); i >= 0; i = name.indexOf('/', i + 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(rest) <= 100 && rest.length > 0) {
      return { name: rest, prefix };
    }
  }
  return null;
}

/** One pax record: `<len> key=value\n`, its length counting itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bytes = Buffer.byteLength(body);
  let len = bytes + String(bytes).length;
  if (String(len).length + bytes !== len) len = String(len).length + bytes;
  return `${len}${body}`;
}

/** What a header block says: an entry's fields, its name split for ustar's fields. */
type HeaderFields = Omit<Entry, 'name' | 'path' | 'type'> & {
  name: { name: string; prefix: string };
  type: string;
};

/** One ustar header block (numeric owner: no user or group names). */
function header(h: HeaderFields): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(h.name.name, 0, 100);
  octal(b, h.mode, 100, 8);
  octal(b, h.uid, 108, 8);
  octal(b, h.gid, 116, 8);
  octal(b, h.size, 124, 12);
  octal(b, Math.max(0, h.mtime), 136, 12);
  b.fill(0x20, 148, 156);
  b.write(h.type, 156, 1);
  b.write(h.linkname, 157, 100);
  b.write('ustar\u000000', 257, 8);
  b.write(h.name.prefix, 345, 155);
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8);
  return b;
}

/** `n` in octal, zero-padded, NUL-terminated, in `len` bytes at `at` (GNU base-256 past that). */
function octal(b: Buffer, n: number, at: number, len: number): void {
  const s = n.toString(8);
  if (s.length < len) {
    b.write(`${s.padStart(len - 1, '0')}\u0000`, at, len);
    return;
  }
  // Too large for octal (a uid over 2^21 - 1 in an 8-byte field): base-256, as GNU tar writes it.
  b[at] = 0x80;
  let v = BigInt(n);
  for (let i = at + len - 1; i > at; i--) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
}
