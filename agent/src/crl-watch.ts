/**
 * How revocation reaches a running agent: the deployer pushes the CA's revocation list
 * (`crl.pem`) to every host, and the agent re-reads the file when it changes (polled: a file
 * replaced by rename is seen too). What it read goes to the stream server (new connections),
 * to the streams it opens, and CRIU's page channel reads the file itself at each migration.
 */
import { readFileSync, statSync } from 'node:fs';
import type { Logger } from '@drover/common';

/** How often the file is looked at. */
export const CRL_POLL_MS = 2000;

/** The CRL's text now, or null when there is none (not pushed yet, or removed). */
export function readCrl(file: string, log: Logger): string | null {
  try {
    const text = readFileSync(file, 'utf8');
    if (!text.includes('-----BEGIN X509 CRL-----')) {
      log.warn('the revocation list is not a PEM CRL; ignored', { file });
      return null;
    }
    return text;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      log.warn('cannot read the revocation list', { file, err });
    return null;
  }
}

/** What identifies one version of the file: its inode, size and mtime ('' when missing). */
function versionOf(file: string): string {
  try {
    const st = statSync(file);
    return `${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch {
    return '';
  }
}

/**
 * Call `apply` with the CRL's text each time `file` changes (null when it goes away); returns how
 * to stop watching. The first reading is the caller's (`readCrl`). A plain poll of the file's
 * inode, size and mtime: it sees a file that appears later, one replaced by rename, and one
 * removed, the same way on every filesystem.
 */
export function watchCrl(
  file: string,
  apply: (crl: string | null) => void,
  log: Logger,
  intervalMs = CRL_POLL_MS,
): () => void {
  let seen = versionOf(file);
  const timer = setInterval(() => {
    const now = versionOf(file);
    if (now === seen) return;
    seen = now;
    const crl = readCrl(file, log);
    log.info('revocation list changed', { file, present: crl !== null });
    try {
      apply(crl);
    } catch (err) {
      log.error('cannot apply the revocation list', { file, err });
    }
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
