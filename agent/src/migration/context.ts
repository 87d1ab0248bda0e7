/** What migrations need from the daemon: peers over NATS, the stream server, fault injection. */
import type { AgentOp, AgentReplies, AgentRequest } from '@drover/protocol';
import type { StreamServer } from '@drover/transfer';
import type { MigrationAuthorizations } from './authorization.js';
import type { AgentTlsFiles } from './page-channel.js';

/**
 * Fault injection for the test suites, set only from the agent's own environment
 * (`DROVER_FAULT`, like CRIU's `CRIU_FAULT`), never from a message.
 */
export interface MigrationFaults {
  /** Source: flip a byte in the Nth data frame after its checksum was computed. */
  corruptFrameAt?: number;
  /** Source: cut the stream after this many payload bytes. */
  truncateAfterBytes?: number;
  /** Source: pace the stream (and image-set uploads) to at most this many bytes per second. */
  throttleBytesPerSec?: number;
  /** Image-set upload: fail after storing this many files of an image. */
  failPushAfterFiles?: number;
  /** Destination: lose one page that arrived through the page channel (a cut page stream). */
  dropPage?: boolean;
}

/** Parse `DROVER_FAULT` (`corrupt-frame=3,truncate=1000000,throttle=5000000,fail-push=2,drop-page`). */
export function parseFaults(spec: string | undefined): MigrationFaults {
  const out: MigrationFaults = {};
  for (const part of (spec ?? '').split(',').filter(Boolean)) {
    const [k, v] = part.split('=');
    if (k === 'drop-page') {
      out.dropPage = true;
      continue;
    }
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) continue;
    if (k === 'corrupt-frame') out.corruptFrameAt = n;
    else if (k === 'truncate') out.truncateAfterBytes = n;
    else if (k === 'throttle') out.throttleBytesPerSec = n;
    else if (k === 'fail-push') out.failPushAfterFiles = n;
  }
  return out;
}

/** Calls another agent's API. */
export type PeerCall = <Op extends AgentOp>(
  host: string,
  op: Op,
  req: AgentRequest<Op>,
  timeoutMs?: number,
) => Promise<AgentReplies[Op]>;

/** Everything a migration uses beyond the Agent itself. */
export interface MigrationContext {
  call: PeerCall;
  streams: StreamServer;
  /** Incoming migrations the controller allowed (`migrate-authorize`). */
  authorizations: MigrationAuthorizations;
  /** The address peers reach this agent's stream server at. */
  advertise: { host: string; port: number };
  faults: MigrationFaults;
  /**
   * TLS material for agent-to-agent streams, when certificates are configured; `crl` is
   * replaced in place when the revocation list changes (crl-watch.ts).
   */
  tls?: { key: string; cert: string; ca: string; crl?: string };
  /** The same certificates as files, for CRIU's TLS on the page channel. */
  tlsFiles?: AgentTlsFiles;
}
