/**
 * CRIU's image messages that `crit x` reads — Drover's own definitions, with the field numbers
 * CRIU publishes in `images/*.proto` (MIT) — and the magic numbers of their files
 * (`criu/include/magic.h`). Every field is optional here so an image from a newer CRIU that
 * leaves one out still decodes; unknown fields are skipped.
 */
import protobuf from 'protobufjs';

const PROTO = `
syntax = "proto2";

message task_kobj_ids_entry {
  optional uint32 vm_id = 1;
  optional uint32 files_id = 2;
  optional uint32 fs_id = 3;
  optional uint32 sighand_id = 4;
}
message inventory_entry {
  optional uint32 img_version = 1;
  optional bool fdinfo_per_id = 2;
  optional task_kobj_ids_entry root_ids = 3;
}
message pstree_entry {
  optional uint32 pid = 1;
  optional uint32 ppid = 2;
  optional uint32 pgid = 3;
  optional uint32 sid = 4;
  repeated uint32 threads = 5;
}
message task_core_entry {
  optional uint32 task_state = 1;
  optional uint32 exit_code = 2;
  optional string comm = 6;
}
message core_entry {
  optional uint32 mtype = 1;
  optional task_core_entry tc = 3;
  optional task_kobj_ids_entry ids = 4;
}
message fdinfo_entry {
  optional uint32 id = 1;
  optional uint32 flags = 2;
  optional uint32 type = 3;
  optional uint32 fd = 4;
}
message reg_file_entry {
  optional uint32 id = 1;
  optional uint32 flags = 2;
  optional uint64 pos = 3;
  optional string name = 6;
  optional uint64 size = 8;
  optional uint32 mode = 10;
}
message inet_sk_entry {
  optional uint32 id = 1;
  optional uint32 ino = 2;
  optional uint32 family = 3;
  optional uint32 type = 4;
  optional uint32 proto = 5;
  optional uint32 state = 6;
  optional uint32 src_port = 7;
  optional uint32 dst_port = 8;
  optional uint32 flags = 9;
  optional uint32 backlog = 10;
  repeated uint32 src_addr = 11;
  repeated uint32 dst_addr = 12;
}
message netlink_sk_entry {
  optional uint32 id = 1;
  optional uint32 ino = 2;
  optional uint32 protocol = 3;
  optional uint32 state = 4;
}
message unix_sk_entry {
  optional uint32 id = 1;
  optional uint32 ino = 2;
  optional uint32 type = 3;
  optional uint32 state = 4;
  optional uint32 flags = 5;
  optional uint32 uflags = 6;
  optional uint32 backlog = 7;
  optional uint32 peer = 8;
  optional bytes name = 11;
  optional string name_dir = 14;
  optional bool deleted = 15;
}
message pipe_entry {
  optional uint32 id = 1;
  optional uint32 pipe_id = 2;
  optional uint32 flags = 3;
}
message fifo_entry {
  optional uint32 id = 1;
  optional uint32 pipe_id = 2;
  optional uint32 regf_id = 3;
}
message file_entry {
  optional uint32 type = 1;
  optional uint32 id = 2;
  optional reg_file_entry reg = 3;
  optional inet_sk_entry isk = 4;
  optional netlink_sk_entry nlsk = 7;
  optional unix_sk_entry usk = 16;
  optional fifo_entry fifo = 17;
  optional pipe_entry pipe = 18;
}
message fs_entry {
  optional uint32 cwd_id = 1;
  optional uint32 root_id = 2;
  optional uint32 umask = 3;
}
message vma_entry {
  optional uint64 start = 1;
  optional uint64 end = 2;
  optional uint64 pgoff = 3;
  optional uint64 shmid = 4;
  optional uint32 prot = 5;
  optional uint32 flags = 6;
  optional uint32 status = 7;
  optional sint64 fd = 8;
}
message mm_entry {
  optional uint64 mm_arg_start = 8;
  optional uint64 mm_arg_end = 9;
  optional uint32 exe_file_id = 12;
  repeated vma_entry vmas = 14;
}
message pagemap_head {
  optional uint32 pages_id = 1;
}
message pagemap_entry {
  optional uint64 vaddr = 1;
  optional uint32 compat_nr_pages = 2;
  optional bool in_parent = 3;
  optional uint32 flags = 4;
  optional uint64 nr_pages = 5;
}
`;

// keepCase: CRIU's names are snake_case; without it protobufjs camel-cases them.
const root = protobuf.parse(PROTO, { keepCase: true }).root;

/** The message types, by CRIU's names. */
export const MessageTypes = {
  inventory: root.lookupType('inventory_entry'),
  pstree: root.lookupType('pstree_entry'),
  core: root.lookupType('core_entry'),
  ids: root.lookupType('task_kobj_ids_entry'),
  fdinfo: root.lookupType('fdinfo_entry'),
  file: root.lookupType('file_entry'),
  fs: root.lookupType('fs_entry'),
  mm: root.lookupType('mm_entry'),
  pagemapHead: root.lookupType('pagemap_head'),
  pagemap: root.lookupType('pagemap_entry'),
} as const;
export type MessageType = keyof typeof MessageTypes;

/** Image magics (`criu/include/magic.h`): the second word of a file, after IMG_COMMON. */
export const Magic = {
  common: 0x54564319,
  service: 0x55105940,
  inventory: 0x58313116,
  pstree: 0x50273030,
  core: 0x55053847,
  ids: 0x54432030,
  fdinfo: 0x56213732,
  file: 0x56303138,
  fs: 0x51403912,
  mm: 0x57492820,
  pagemap: 0x56084025,
} as const;

/** CRIU's file types (`fd_types` in `images/fdinfo.proto`). */
export const FD_TYPES = [
  'UND',
  'REG',
  'PIPE',
  'FIFO',
  'INETSK',
  'UNIXSK',
  'EVENTFD',
  'EVENTPOLL',
  'INOTIFY',
  'SIGNALFD',
  'PACKETSK',
  'TTY',
  'FANOTIFY',
  'NETLINKSK',
  'NS',
  'TUNF',
  'EXT',
  'TIMERFD',
  'MEMFD',
  'BPFMAP',
  'PIDFD',
] as const;

/** `vma_entry.status` bits (`criu/include/image.h`). */
export const VmaStatus = {
  regular: 1 << 0,
  stack: 1 << 1,
  vsyscall: 1 << 2,
  vdso: 1 << 3,
  heap: 1 << 5,
  filePrivate: 1 << 6,
  fileShared: 1 << 7,
  anonShared: 1 << 8,
  anonPrivate: 1 << 9,
  sysvipc: 1 << 10,
  socket: 1 << 11,
  vvar: 1 << 12,
  aioring: 1 << 13,
  memfd: 1 << 14,
} as const;

/** `pagemap_entry.flags` bits (`criu/include/pagemap.h`). */
export const PagemapFlags = { parent: 1 << 0, lazy: 1 << 1, present: 1 << 2 } as const;
