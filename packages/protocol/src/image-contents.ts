/**
 * What is inside a checkpoint, decoded from CRIU's images (what `crit show` and `crit x ps|fds|
 * mems` print): the process tree with PIDs and commands, each process's open files and sockets,
 * and its memory mappings with sizes. The wire form of `images inspect NAME --job J`.
 */

/** A socket behind a file descriptor. */
export interface ImageSocket {
  /** `inet`, `inet6`, `unix`, `netlink`, `packet`. */
  family: string;
  /** `stream`, `dgram`, `seqpacket`, `raw`. */
  type: string;
  /** TCP state (`LISTEN`, `ESTABLISHED`, ...) or `unconnected`/`connected` for others. */
  state: string;
  /** `address:port` (inet), the path or `@abstract` name (unix). */
  local: string | null;
  remote: string | null;
  /** Unix sockets: this socket's inode and its peer's (0: none). */
  ino?: number;
  peer?: number;
}

/** One open file descriptor. */
export interface ImageFd {
  fd: number;
  /** CRIU's file type: `REG`, `PIPE`, `FIFO`, `INETSK`, `UNIXSK`, `EVENTFD`, `TTY`, ... */
  type: string;
  /** One line for a human: a path, `pipe[ID]`, `tcp 10.0.0.1:80 LISTEN`, ... */
  description: string;
  /** Regular files: the path, the offset and (when CRIU recorded it) the size. */
  path?: string;
  pos?: number;
  size?: number;
  socket?: ImageSocket;
}

/** One memory mapping. */
export interface ImageMapping {
  /** Addresses as hex strings (they do not fit a JSON number). */
  start: string;
  end: string;
  sizeBytes: number;
  /** Bytes of it whose pages are in the image. */
  dumpedBytes: number;
  /** `rwx` with `-` for what is missing, then `p` (private) or `s` (shared). */
  perms: string;
  /** A file's path, `[heap]`, `[stack]`, `[vdso]`, `[vsyscall]`, `[anon]`, `shmem`, ... */
  what: string;
}

/** One process of the dumped tree. */
export interface ImageProcess {
  /** PIDs as the job sees them (its own PID namespace). */
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  threads: number[];
  /** The kernel's name for it (`comm`, 15 characters at most). */
  comm: string;
  /** Its argv, read from its memory in the image (null when the pages are not there). */
  cmdline: string[] | null;
  exe: string | null;
  cwd: string | null;
  root: string | null;
  files: ImageFd[];
  memory: {
    /** Sum of its mappings. */
    mappedBytes: number;
    /** Bytes of memory the image holds for it (dumped pages). */
    dumpedBytes: number;
    mappings: ImageMapping[];
  };
}

/** A decoded checkpoint of one job. */
export interface ImageContents {
  /** CRIU's image format version (inventory). */
  imageVersion: number | null;
  processes: ImageProcess[];
  /** Some lists were cut to keep the reply small (`maxMappings`, `maxFiles` per process). */
  truncated: boolean;
  /** Bytes of every file of the image. */
  sizeBytes: number;
}
