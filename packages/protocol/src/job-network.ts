/**
 * The job network on the wire: how a job is attached (its own address on the cluster's job
 * segment, or the host's network), and the pure arithmetic of its addresses, MAC and link names.
 * The model is docs/NETWORK.md's: every host has a job bridge on one shared L2 segment; a job's
 * veth hangs off the bridge of the host it runs on, and its address and MAC move with it.
 */
import { DroverError, ErrorCode } from '@drover/common';
import { int, obj, opt, str } from './schema.js';

/** The bridge a host's jobs hang off, unless the agent is configured otherwise. */
export const DEFAULT_JOB_BRIDGE = 'drover0';

/** The job's side of its veth, inside its network namespace. */
export const JOB_INTERFACE = 'eth0';

/** How a job is attached to the network. */
export const JobNetMode = {
  /** Its own network namespace and address on the job segment (the default). */
  job: 'job',
  /** The host's network namespace: no address of its own; outside connections cannot move. */
  host: 'host',
} as const;
export type JobNetMode = (typeof JobNetMode)[keyof typeof JobNetMode];

/** A job's own network identity: fixed for its life, it moves with the job. */
export interface JobAddress {
  /** IPv4 address on the job segment. */
  address: string;
  prefixLength: number;
  /** The segment's router (the job's default route), or null for a segment without one. */
  gateway: string | null;
  /** Derived from the address (`macFor`), so every host agrees on it. */
  mac: string;
}

/** How one job is attached, as `inspect`, `jobs --json` and records show it. */
export type JobNetwork = { mode: 'host' } | ({ mode: 'job' } & JobAddress);

/** Dotted-quad IPv4. */
export const IPV4_PATTERN =
  /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** An interface name the kernel accepts (IFNAMSIZ 16 with the NUL; no '/', ':' or spaces). */
export const IFNAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;

/** The `network` of a run request: present means "its own address", absent the host's network. */
export const JOB_ADDRESS_SCHEMA = obj({
  address: str({ pattern: IPV4_PATTERN }),
  prefixLength: int({ min: 8, max: 30 }),
  gateway: opt(str({ pattern: IPV4_PATTERN })),
});

/** An IPv4 address as a 32-bit unsigned number. */
export function ipv4ToInt(address: string): number {
  if (!IPV4_PATTERN.test(address)) {
    throw new DroverError(ErrorCode.InvalidArgument, `not an IPv4 address: ${address}`, {
      details: { address },
    });
  }
  return address.split('.').reduce((n, b) => n * 256 + Number(b), 0);
}

/** A 32-bit unsigned number as a dotted-quad IPv4 address. */
export function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/** A subnet in CIDR notation, checked and normalised. */
export interface Subnet {
  /** The network address (host bits zero). */
  base: number;
  prefixLength: number;
  /** Number of addresses in it, network and broadcast included. */
  size: number;
}

/** Parse `a.b.c.d/len` (8 ≤ len ≤ 30); host bits must be zero. */
export function parseSubnet(cidr: string): Subnet {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(cidr);
  const bad = (why: string): never => {
    throw new DroverError(ErrorCode.InvalidArgument, `bad subnet ${cidr}: ${why}`, {
      details: { subnet: cidr },
    });
  };
  if (!m?.[1] || !m[2]) return bad('expected a.b.c.d/len');
  const prefixLength = Number(m[2]);
  if (prefixLength < 8 || prefixLength > 30) return bad('the prefix length must be 8..30');
  const addr = IPV4_PATTERN.test(m[1]) ? ipv4ToInt(m[1]) : bad('not an IPv4 address');
  const size = 2 ** (32 - prefixLength);
  if (addr % size !== 0)
    return bad(
      `host bits are set (the network is ${intToIpv4(addr - (addr % size))}/${prefixLength})`,
    );
  return { base: addr, prefixLength, size };
}

/** True when `address` lies in `subnet` and is neither its network nor its broadcast address. */
export function isHostAddress(subnet: Subnet, address: string): boolean {
  const n = ipv4ToInt(address);
  return n > subnet.base && n < subnet.base + subnet.size - 1;
}

/** The job's MAC: locally administered (`02:`), then `44` ("D") and the four address bytes. */
export function macFor(address: string): string {
  const bytes = address.split('.').map((b) => Number(b).toString(16).padStart(2, '0'));
  return ['02', '44', ...bytes].join(':');
}

/**
 * The host side of a job's veth on whatever host it runs: `dj` and 8 hex digits of an FNV-1a
 * hash of the job id. The same on every host (the restore names it so), unique on one host
 * unless two ids collide in 32 bits, which the agent checks before creating it.
 */
export function hostVethName(jobId: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < jobId.length; i++) {
    h ^= jobId.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return `dj${h.toString(16).padStart(8, '0')}`;
}
