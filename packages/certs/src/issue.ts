/**
 * A cluster CA in a directory and the certificates it issues, made with the `openssl` CLI.
 * Layout of a certificates directory (0700, every file 0600):
 *
 *   ca.crt  ca.key                 the cluster CA (P-256, 10 years)
 *   server/<name>.crt|.key         a NATS server (with its addresses as SANs)
 *   server/<node>.crt|.key         a NATS cluster node: a route certificate (nats-files.ts)
 *   <role>/<name>.crt|.key         an identity: controller, agent (name = host id), operator, viewer
 *   nats-security.conf             the nats-server `tls` + `authorization` blocks (nats-files.ts)
 *   nats-cluster.json              the NATS cluster's name, nodes and route port (nats-files.ts)
 *   nats-security.<node>.conf      a cluster node's generated config (nats-files.ts)
 *   crl.pem, revoked/              revoked certificates (revocation.ts)
 *
 * A certificate's subject is `O=drover, OU=<role>, CN=<name>`: NATS maps it to the user of that
 * identity, and the role decides its permissions.
 */
import { X509Certificate, randomBytes } from 'node:crypto';
import { chmod, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DroverError, ErrorCode } from '@drover/common';
import { identityOfSubject, IDENTITY_NAME_PATTERN, ROLES, type Identity } from '@drover/protocol';
import { checkIdentities } from './nats-config.js';
import { exists, openssl, privateDir } from './openssl.js';

/** A certificate, its key and the CA that signed it: what a TLS client or server needs. */
export interface CertFiles {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

/** The NATS server certificate's name unless told otherwise. */
export const DEFAULT_SERVER_NAME = 'nats';

const CA_DAYS = 3650;
const LEAF_DAYS = 825;

/** The CA's files in `dir`. */
export function caPaths(dir: string): { certFile: string; keyFile: string } {
  return { certFile: join(dir, 'ca.crt'), keyFile: join(dir, 'ca.key') };
}

/** Where the certificate of `id` lives in `dir`. */
export function identityPaths(dir: string, id: Identity): CertFiles {
  return {
    caFile: caPaths(dir).certFile,
    certFile: join(dir, id.role, `${id.name}.crt`),
    keyFile: join(dir, id.role, `${id.name}.key`),
  };
}

/** Where the NATS server certificate `name` lives in `dir`. */
export function serverPaths(dir: string, name = DEFAULT_SERVER_NAME): CertFiles {
  return {
    caFile: caPaths(dir).certFile,
    certFile: join(dir, 'server', `${name}.crt`),
    keyFile: join(dir, 'server', `${name}.key`),
  };
}

/** A new P-256 key at `path`, mode 0600 (written inside a 0700 directory). */
async function newKey(path: string): Promise<void> {
  await openssl([
    'genpkey',
    '-algorithm',
    'EC',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-out',
    path,
  ]);
  await chmod(path, 0o600);
}

/** An openssl config with a fixed subject and the extensions of one certificate. */
function opensslConfig(subject: { OU: string; CN: string }, extensions: string[]): string {
  return [
    '[req]',
    'distinguished_name = dn',
    'prompt = no',
    '[dn]',
    // This order prints as `CN=...,OU=...,O=drover`, the user name NATS maps (RFC 2253).
    'O = drover',
    `OU = ${subject.OU}`,
    `CN = ${subject.CN}`,
    '[ext]',
    ...extensions,
    '',
  ].join('\n');
}

/**
 * Create the cluster CA in `dir` (made 0700). Refuses when `dir` already has one: a new CA would
 * orphan every certificate issued so far.
 */
export async function initCa(dir: string): Promise<void> {
  const ca = caPaths(dir);
  if ((await exists(ca.certFile)) || (await exists(ca.keyFile)))
    throw new DroverError(ErrorCode.AlreadyExists, `${dir} already has a CA (ca.crt/ca.key)`, {
      details: { dir },
    });
  await privateDir(dir);
  const cfg = join(dir, `.ca.${process.pid}.cnf`);
  await writeFile(
    cfg,
    opensslConfig({ OU: 'ca', CN: `Drover cluster CA ${randomBytes(4).toString('hex')}` }, [
      'basicConstraints = critical, CA:TRUE, pathlen:0',
      'keyUsage = critical, keyCertSign, cRLSign',
      'subjectKeyIdentifier = hash',
    ]),
    { mode: 0o600 },
  );
  try {
    await newKey(ca.keyFile);
    await openssl([
      'req',
      '-x509',
      '-new',
      '-key',
      ca.keyFile,
      '-config',
      cfg,
      '-extensions',
      'ext',
      '-days',
      String(CA_DAYS),
      '-sha256',
      '-out',
      ca.certFile,
    ]);
    await chmod(ca.certFile, 0o600);
  } finally {
    await rm(cfg, { force: true });
  }
}

/** Issue one certificate signed by the CA of `dir` (the kinds' own functions call it). */
export async function issue(
  dir: string,
  files: CertFiles,
  subject: { OU: string; CN: string },
  extensions: string[],
): Promise<CertFiles> {
  const ca = caPaths(dir);
  if (!(await exists(ca.keyFile)))
    throw new DroverError(ErrorCode.FailedPrecondition, `${dir} has no CA: drover certs init`, {
      details: { dir },
    });
  await privateDir(join(files.certFile, '..'));
  const base = join(dir, `.issue.${process.pid}.${randomBytes(4).toString('hex')}`);
  await writeFile(
    `${base}.cnf`,
    opensslConfig(subject, [
      'basicConstraints = critical, CA:FALSE',
      'keyUsage = critical, digitalSignature, keyEncipherment',
      'subjectKeyIdentifier = hash',
      'authorityKeyIdentifier = keyid',
      ...extensions,
    ]),
    { mode: 0o600 },
  );
  try {
    await newKey(files.keyFile);
    await openssl([
      'req',
      '-new',
      '-key',
      files.keyFile,
      '-config',
      `${base}.cnf`,
      '-out',
      `${base}.csr`,
    ]);
    await openssl([
      'x509',
      '-req',
      '-in',
      `${base}.csr`,
      '-CA',
      ca.certFile,
      '-CAkey',
      ca.keyFile,
      '-set_serial',
      `0x${randomBytes(16).toString('hex')}`,
      '-days',
      String(LEAF_DAYS),
      '-sha256',
      '-extfile',
      `${base}.cnf`,
      '-extensions',
      'ext',
      '-out',
      files.certFile,
    ]);
    await chmod(files.certFile, 0o600);
  } finally {
    await rm(`${base}.cnf`, { force: true });
    await rm(`${base}.csr`, { force: true });
  }
  return files;
}

/**
 * Issue (or re-issue: a new key replaces the old) the certificate of `id`. Agents' certificates
 * can also serve agent-to-agent streams (server and client use); `sans` adds subject
 * alternative names (`IP:10.0.0.5`, `DNS:h1.example`) for that.
 */
export async function issueIdentity(
  dir: string,
  id: Identity,
  options: { sans?: readonly string[] } = {},
): Promise<CertFiles> {
  checkIdentities([id]);
  const usage = id.role === 'agent' ? 'clientAuth, serverAuth' : 'clientAuth';
  return issue(dir, identityPaths(dir, id), { OU: id.role, CN: id.name }, [
    `extendedKeyUsage = ${usage}`,
    ...(options.sans?.length ? [`subjectAltName = ${sanList(options.sans)}`] : []),
  ]);
}

/**
 * Issue the certificate of a NATS server. `addresses` are what clients dial: IPs become `IP:`
 * names, anything else `DNS:` (clients check the server's name against them).
 */
export async function issueServer(
  dir: string,
  addresses: readonly string[],
  name = DEFAULT_SERVER_NAME,
): Promise<CertFiles> {
  if (!IDENTITY_NAME_PATTERN.test(name))
    throw new DroverError(ErrorCode.InvalidArgument, `bad server name ${JSON.stringify(name)}`);
  if (addresses.length === 0)
    throw new DroverError(ErrorCode.InvalidArgument, 'a NATS server certificate needs an address');
  return issue(dir, serverPaths(dir, name), { OU: 'server', CN: name }, [
    'extendedKeyUsage = serverAuth',
    // nats.js dialing an IP address checks the name `localhost` (it passes no servername), so
    // the server certificate carries it as well as its addresses.
    `subjectAltName = ${sanList([...new Set([...addresses, 'localhost'])])}`,
  ]);
}

const IP = /^(\d{1,3}(\.\d{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:]*)$/;
const DNS = /^[A-Za-z0-9*]([A-Za-z0-9.-]{0,252})$/;

/** The `subjectAltName` value of `names`: IPs as `IP:`, others as `DNS:` (or as given). */
export function sanList(names: readonly string[]): string {
  return names
    .map((n) => {
      if (/^(IP|DNS):/.test(n)) return n;
      if (IP.test(n)) return `IP:${n}`;
      if (DNS.test(n)) return `DNS:${n}`;
      throw new DroverError(ErrorCode.InvalidArgument, `bad address ${JSON.stringify(n)}`);
    })
    .join(', ');
}

/** The identity a certificate file names (its subject), or null if it is not a Drover identity. */
export async function identityOfCertificate(certFile: string): Promise<Identity | null> {
  return identityOfSubject(new X509Certificate(await readFile(certFile)).subject);
}

/** Every identity with a certificate in `dir`, sorted by role then name. */
export async function listIdentities(dir: string): Promise<Identity[]> {
  const out: Identity[] = [];
  for (const role of ROLES) {
    const files = await readdir(join(dir, role)).catch(() => [] as string[]);
    for (const f of files) {
      if (!f.endsWith('.crt')) continue;
      const id = await identityOfCertificate(join(dir, role, f));
      if (id && id.role === role && `${id.name}.crt` === f) out.push(id);
    }
  }
  return checkIdentities(out);
}
