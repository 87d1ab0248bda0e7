/**
 * Revoked certificates: an identity that left the cluster (a host removed by `drover-deploy
 * uninstall --purge`) loses its certificate. Revoking one records its serial in
 * `revoked/index.txt` (an `openssl ca` database), regenerates `crl.pem` (signed by the CA: what
 * the agents' streams and CRIU's page channel check), moves the certificate to `revoked/` and
 * deletes its key, and regenerates the NATS configs, which then have no user for it: NATS
 * refuses it once reloaded. Layout:
 *
 *   crl.pem                          the CA's certificate revocation list (PEM)
 *   revoked/index.txt, crlnumber     the openssl ca database it is made from
 *   revoked/<role>.<name>.<serial>.crt   each revoked certificate, for the record
 */
import { X509Certificate } from 'node:crypto';
import { appendFile, chmod, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import { identityOfSubject, natsUserOf, type Identity } from '@drover/protocol';
import { caPaths, identityPaths } from './issue.js';
import { writeNatsConfigs } from './nats-files.js';
import { exists, openssl, privateDir } from './openssl.js';

/** The file name of the CRL in a certificates directory. */
export const CRL_FILE = 'crl.pem';
/** How long a CRL is valid: it is re-signed at each revocation, and checked by its signature. */
const CRL_DAYS = 3650;

/** Where the CRL of `dir` lives. */
export function crlPath(dir: string): string {
  return join(dir, CRL_FILE);
}

/** One revoked certificate. */
export interface RevokedCertificate {
  /** Its serial number (upper-case hex, as openssl writes it). */
  readonly serial: string;
  /** The identity it named (null when it named none of ours). */
  readonly identity: Identity | null;
  /** When it was revoked (ISO 8601). */
  readonly revokedAt: string;
}

const revokedDir = (dir: string): string => join(dir, 'revoked');
const indexPath = (dir: string): string => join(revokedDir(dir), 'index.txt');

/** `YYMMDDHHMMSSZ` (ASN.1 UTCTime), as the openssl ca database has dates. */
function utcTime(d: Date): string {
  return d
    .toISOString()
    .replace(/^\d\d(\d\d)-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d).*$/, '$1$2$3$4$5$6Z');
}

/** `20YY-MM-DDTHH:MM:SSZ` of a UTCTime. */
function fromUtcTime(t: string): string {
  const m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(t);
  return m ? `20${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z` : t;
}

/** A serial as openssl's database writes it: upper-case hex of even length. */
function serialHex(serial: string): string {
  const s = serial.replace(/:/g, '').toUpperCase();
  return s.length % 2 ? `0${s}` : s;
}

/**
 * (Re)write `<dir>/crl.pem` from the revocations recorded in `dir` (none: an empty CRL, which
 * still tells a peer that its CA revokes nothing). Returns its path.
 */
export async function writeCrl(dir: string): Promise<string> {
  const ca = caPaths(dir);
  if (!(await exists(ca.keyFile)))
    throw new DroverError(ErrorCode.FailedPrecondition, `${dir} has no CA key: cannot sign a CRL`, {
      details: { dir },
    });
  await privateDir(revokedDir(dir));
  if (!(await exists(indexPath(dir)))) await writeFile(indexPath(dir), '', { mode: 0o600 });
  const numberFile = join(revokedDir(dir), 'crlnumber');
  if (!(await exists(numberFile))) await writeFile(numberFile, '01\n', { mode: 0o600 });
  const cnf = join(revokedDir(dir), `.crl.${process.pid}.cnf`);
  await writeFile(
    cnf,
    [
      '[ca]',
      'default_ca = drover',
      '[drover]',
      `database = ${indexPath(dir)}`,
      `crlnumber = ${numberFile}`,
      'default_md = sha256',
      `default_crl_days = ${CRL_DAYS}`,
      'unique_subject = no',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  const out = crlPath(dir);
  try {
    await openssl([
      'ca',
      '-gencrl',
      '-batch',
      '-config',
      cnf,
      '-cert',
      ca.certFile,
      '-keyfile',
      ca.keyFile,
      '-out',
      out,
    ]);
    await chmod(out, 0o600);
  } finally {
    await rm(cnf, { force: true });
  }
  return out;
}

/** Every revocation recorded in `dir`, oldest first. */
export async function listRevoked(dir: string): Promise<RevokedCertificate[]> {
  const text = await readFile(indexPath(dir), 'utf8').catch(() => '');
  return text
    .split('\n')
    .map((l) => l.split('\t'))
    .filter((f) => f[0] === 'R' && f.length >= 6)
    .map((f) => ({
      serial: f[3]!,
      identity: identityOfSubject(f[5]!.split('/').filter(Boolean).join('\n')),
      revokedAt: fromUtcTime(f[2]!.split(',')[0]!),
    }));
}

/** What {@link revokeIdentity} did. */
export interface Revocation {
  readonly serial: string;
  /** The NATS user that no longer exists (`CN=h1,OU=agent,O=drover`). */
  readonly natsUser: string;
  readonly crlFile: string;
  /** The NATS configs regenerated without it: reload nats-server with them. */
  readonly natsConfigs: readonly string[];
}

/**
 * Revoke the certificate of `id` in `dir`: record it, re-sign the CRL, move the certificate to
 * `revoked/` (its key is deleted) and regenerate the NATS configs without its user.
 * @throws DroverError NOT_FOUND when `dir` has no certificate for `id`.
 */
export async function revokeIdentity(dir: string, id: Identity): Promise<Revocation> {
  const files = identityPaths(dir, id);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(await readFile(files.certFile));
  } catch (err) {
    throw new DroverError(
      ErrorCode.NotFound,
      `no certificate of ${id.role} ${id.name} in ${dir} to revoke`,
      { cause: err, details: { dir, ...id } },
    );
  }
  const serial = serialHex(cert.serialNumber);
  await privateDir(revokedDir(dir));
  const already = (await listRevoked(dir)).some((r) => r.serial === serial);
  if (!already) {
    const subject = `/O=drover/OU=${id.role}/CN=${id.name}`;
    const line = [
      'R',
      utcTime(new Date(cert.validTo)),
      utcTime(new Date()),
      serial,
      'unknown',
      subject,
    ];
    await appendFile(indexPath(dir), `${line.join('\t')}\n`, { mode: 0o600 });
  }
  const crlFile = await writeCrl(dir);
  await rename(files.certFile, join(revokedDir(dir), `${id.role}.${id.name}.${serial}.crt`));
  await rm(files.keyFile, { force: true });
  const natsConfigs = await writeNatsConfigs(dir);
  return { serial, natsUser: natsUserOf(id), crlFile, natsConfigs };
}
