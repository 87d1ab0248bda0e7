/**
 * The subset of CRIU's RPC messages Drover speaks, written for Drover (field numbers are the
 * facts published in CRIU's `images/rpc.proto`), and their encode/decode.
 */
import protobuf from 'protobufjs';

// Only what Drover uses. proto2 semantics: optional fields stay unset unless given.
const PROTO = `
syntax = "proto2";

message criu_page_server_info {
  optional string address = 1;
  optional int32 port = 2;
  optional int32 pid = 3;
  optional int32 fd = 4;
}

message inherit_fd {
  required string key = 1;
  required int32 fd = 2;
}

message cgroup_root {
  optional string ctrl = 1;
  required string path = 2;
}

enum criu_cg_mode {
  IGNORE = 0;
  CG_NONE = 1;
  PROPS = 2;
  SOFT = 3;
  FULL = 4;
  STRICT = 5;
  DEFAULT = 6;
}

enum criu_network_lock_method {
  IPTABLES = 1;
  NFTABLES = 2;
  SKIP = 3;
}

message criu_opts {
  required int32 images_dir_fd = 1 [default = -1];
  optional int32 pid = 2;
  optional bool leave_running = 3;
  optional bool ext_unix_sk = 4;
  optional bool tcp_established = 5;
  optional bool evasive_devices = 6;
  optional bool shell_job = 7;
  optional bool file_locks = 8;
  optional int32 log_level = 9;
  optional string log_file = 10;
  optional criu_page_server_info ps = 11;
  optional bool notify_scripts = 12;
  optional string root = 13;
  optional string parent_img = 14;
  optional bool track_mem = 15;
  optional int32 work_dir_fd = 17;
  optional bool link_remap = 18;
  optional bool manage_cgroups = 24;
  repeated cgroup_root cg_root = 25;
  optional bool rst_sibling = 26;
  repeated inherit_fd inherit_fd = 27;
  optional criu_cg_mode manage_cgroups_mode = 34;
  optional uint32 ghost_limit = 35;
  repeated string external = 37;
  optional string freeze_cgroup = 44;
  optional uint32 timeout = 45;
  optional bool tcp_skip_in_flight = 46;
  optional bool weak_sysctls = 47;
  optional string tls_cacert = 54;
  optional string tls_cacrl = 55;
  optional string tls_cert = 56;
  optional string tls_key = 57;
  optional bool tls = 58;
  optional bool tls_no_cn_verify = 59;
  optional bool lazy_pages = 48;
  optional int32 status_fd = 49;
  optional bool tcp_close = 52;
  optional criu_network_lock_method network_lock = 64;
  optional string images_dir = 68;
  optional bool leave_stopped = 69;
  optional bool display_stats = 70;
}

message criu_dump_resp {
  optional bool restored = 1;
}

message criu_restore_resp {
  required int32 pid = 1;
}

message criu_notify {
  optional string script = 1;
  optional int32 pid = 2;
}

enum criu_req_type {
  EMPTY = 0;
  DUMP = 1;
  RESTORE = 2;
  CHECK = 3;
  PRE_DUMP = 4;
  PAGE_SERVER = 5;
  NOTIFY = 6;
  CPUINFO_DUMP = 7;
  CPUINFO_CHECK = 8;
  FEATURE_CHECK = 9;
  VERSION = 10;
  WAIT_PID = 11;
  PAGE_SERVER_CHLD = 12;
  SINGLE_PRE_DUMP = 13;
}

message criu_features {
  optional bool mem_track = 1;
  optional bool lazy_pages = 2;
  optional bool pidfd_store = 3;
}

message criu_req {
  required criu_req_type type = 1;
  optional criu_opts opts = 2;
  optional bool notify_success = 3;
  optional bool keep_open = 4;
  optional criu_features features = 5;
  optional uint32 pid = 6;
}

message criu_version {
  required int32 major_number = 1;
  required int32 minor_number = 2;
  optional string gitid = 3;
  optional int32 sublevel = 4;
  optional int32 extra = 5;
  optional string name = 6;
}

message criu_resp {
  required criu_req_type type = 1;
  required bool success = 2;
  optional criu_dump_resp dump = 3;
  optional criu_restore_resp restore = 4;
  optional criu_notify notify = 5;
  optional criu_page_server_info ps = 6;
  optional int32 cr_errno = 7;
  optional criu_features features = 8;
  optional string cr_errmsg = 9;
  optional criu_version version = 10;
  optional int32 status = 11;
}
`;

/** Request types, as CRIU numbers them. */
export const ReqType = {
  EMPTY: 0,
  DUMP: 1,
  RESTORE: 2,
  CHECK: 3,
  PRE_DUMP: 4,
  PAGE_SERVER: 5,
  NOTIFY: 6,
  CPUINFO_DUMP: 7,
  CPUINFO_CHECK: 8,
  FEATURE_CHECK: 9,
  VERSION: 10,
  WAIT_PID: 11,
  PAGE_SERVER_CHLD: 12,
  SINGLE_PRE_DUMP: 13,
} as const;
export type ReqTypeName = keyof typeof ReqType;

/** cgroup handling modes on restore (`--manage-cgroups=MODE`). */
export const CgroupMode = { ignore: 0, none: 1, props: 2, soft: 3, full: 4, strict: 5 } as const;
export type CgroupMode = keyof typeof CgroupMode;

/** How CRIU locks the network while dumping TCP connections. */
export const NetworkLock = { iptables: 1, nftables: 2, skip: 3 } as const;
export type NetworkLock = keyof typeof NetworkLock;

/** `criu_opts` as a plain object (snake_case, exactly the wire names). */
export interface RpcOpts {
  images_dir_fd: number;
  images_dir?: string;
  pid?: number;
  leave_running?: boolean;
  ext_unix_sk?: boolean;
  tcp_established?: boolean;
  evasive_devices?: boolean;
  shell_job?: boolean;
  file_locks?: boolean;
  log_level?: number;
  log_file?: string;
  ps?: { address?: string; port?: number; pid?: number; fd?: number };
  notify_scripts?: boolean;
  root?: string;
  parent_img?: string;
  track_mem?: boolean;
  work_dir_fd?: number;
  link_remap?: boolean;
  manage_cgroups?: boolean;
  cg_root?: { ctrl?: string; path: string }[];
  rst_sibling?: boolean;
  inherit_fd?: { key: string; fd: number }[];
  manage_cgroups_mode?: number;
  ghost_limit?: number;
  external?: string[];
  freeze_cgroup?: string;
  timeout?: number;
  tcp_skip_in_flight?: boolean;
  weak_sysctls?: boolean;
  tls_cacert?: string;
  tls_cacrl?: string;
  tls_cert?: string;
  tls_key?: string;
  tls?: boolean;
  tls_no_cn_verify?: boolean;
  lazy_pages?: boolean;
  status_fd?: number;
  tcp_close?: boolean;
  network_lock?: number;
  leave_stopped?: boolean;
  display_stats?: boolean;
}

/** `criu_req` as a plain object. */
export interface RpcRequest {
  type: number;
  opts?: RpcOpts;
  notify_success?: boolean;
  keep_open?: boolean;
  features?: { mem_track?: boolean; lazy_pages?: boolean; pidfd_store?: boolean };
  pid?: number;
}

/** `criu_resp` as a plain object. */
export interface RpcResponse {
  type: number;
  success: boolean;
  dump?: { restored?: boolean };
  restore?: { pid: number };
  notify?: { script?: string; pid?: number };
  ps?: { address?: string; port?: number; pid?: number; fd?: number };
  cr_errno?: number;
  features?: { mem_track?: boolean; lazy_pages?: boolean; pidfd_store?: boolean };
  cr_errmsg?: string;
  version?: {
    major_number: number;
    minor_number: number;
    gitid?: string;
    sublevel?: number;
    extra?: number;
    name?: string;
  };
  status?: number;
}

// keepCase: without it protobufjs camel-cases names and snake_case input fields are dropped.
const root = protobuf.parse(PROTO, { keepCase: true }).root;
const Req = root.lookupType('criu_req');
const Resp = root.lookupType('criu_resp');

/** The message types of the schema. */
const messageTypes = (): protobuf.Type[] =>
  root.nestedArray.filter((t): t is protobuf.Type => t instanceof protobuf.Type);

/**
 * Compile every message's codecs now (protobufjs generates them at a type's first use: ~20 ms of
 * an agent's CPU, which fell into its first dump's or restore's frozen window). An agent calls
 * it once at start. Returns how many types it compiled.
 */
export function compileRpcCodecs(): number {
  const types = messageTypes();
  for (const t of types) t.setup();
  return types.length;
}

/** Names of the message types whose codecs are not compiled yet (tests). */
export function uncompiledRpcTypes(): string[] {
  // protobufjs puts each type's generated codecs on the type itself; until then they are the
  // prototype's setup stubs.
  return messageTypes()
    .filter((t) => !Object.prototype.hasOwnProperty.call(t, 'encode'))
    .map((t) => t.name);
}

/** Encode a request; throws if a required field is missing. */
export function encodeRequest(req: RpcRequest): Uint8Array {
  // protobufjs's verify does not enforce proto2 `required`; check ours here.
  if (!Number.isInteger(req.type)) throw new TypeError('invalid criu_req: type is required');
  if (req.opts && !Number.isInteger(req.opts.images_dir_fd)) {
    throw new TypeError('invalid criu_req: opts.images_dir_fd is required');
  }
  const problem = Req.verify(req);
  if (problem) throw new TypeError(`invalid criu_req: ${problem}`);
  return Req.encode(Req.fromObject(req)).finish();
}

/** Decode a response (enums as numbers, unset optionals absent). */
export function decodeResponse(bytes: Uint8Array): RpcResponse {
  const msg = Resp.decode(bytes);
  return Resp.toObject(msg, { enums: Number, longs: Number, defaults: false }) as RpcResponse;
}

/** Decode a request (tests use it to check what was sent). */
export function decodeRequest(bytes: Uint8Array): RpcRequest {
  return Req.toObject(Req.decode(bytes), { enums: Number, longs: Number }) as RpcRequest;
}

/** Encode a response (tests use it to play CRIU's side). */
export function encodeResponse(resp: RpcResponse): Uint8Array {
  return Resp.encode(Resp.fromObject(resp)).finish();
}

/** The name of a request type number, for messages. */
export function reqTypeName(type: number): string {
  for (const [name, n] of Object.entries(ReqType)) if (n === type) return name;
  return `TYPE_${type}`;
}
