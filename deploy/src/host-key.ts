/** Pinned SSH host keys: an OpenSSH public key line or a SHA256 fingerprint, compared by fingerprint. */
import { createHash } from 'node:crypto';

/** A pinned SSH host key: the OpenSSH public key line, or only its SHA256 fingerprint. */
export interface PinnedHostKey {
  /** `SHA256:<base64, no padding>`, as `ssh-keygen -lf` prints it. */
  readonly fingerprint: string;
  /** The key type when the full key was given (`ssh-ed25519`, ...). */
  readonly type: string | null;
}

const HOST_KEY_LINE =
  /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)) ([A-Za-z0-9+/]+={0,2})(?:\s.*)?$/;
const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;

/** `SHA256:...` of an SSH wire-format public key blob. */
export function fingerprintOf(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** Parse a pinned host key (an OpenSSH public key line or a SHA256 fingerprint); null if neither. */
export function parseHostKey(text: string): PinnedHostKey | null {
  const t = text.trim();
  if (FINGERPRINT.test(t)) return { fingerprint: t, type: null };
  const m = HOST_KEY_LINE.exec(t);
  if (!m) return null;
  const blob = Buffer.from(m[2] ?? '', 'base64');
  // The blob starts with its own type name (uint32 length + string): it must agree with the line.
  const len = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
  if (len < 0 || blob.subarray(4, 4 + len).toString('latin1') !== m[1]) return null;
  return { fingerprint: fingerprintOf(blob), type: m[1] ?? null };
}
