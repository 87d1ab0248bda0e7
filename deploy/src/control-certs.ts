/**
 * The certificates of the control plane the deployer runs, issued from the certificates
 * directory before any host is touched: each NATS server's (its route certificate, which also
 * serves clients, naming its host's address) and each controller host's controller identity.
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import {
  caPaths,
  identityPaths,
  issueIdentity,
  issueNatsNode,
  natsRouteUser,
  serverPaths,
} from '@drover/certs';
import { DeployError, DeployFailure } from './errors.js';
import { controllerIdentity } from './control-files.js';
import type { Progress } from './fleet.js';
import type { HostEntry, Inventory } from './inventory.js';

const RENEW_BEFORE_MS = 30 * 24 * 3600 * 1000;

/** Why a certificate must be issued (again), or null when it serves. */
async function why(
  certFile: string,
  ca: X509Certificate,
  ip: string | null,
  subject: string | null,
): Promise<string | null> {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(await readFile(certFile));
  } catch {
    return 'missing';
  }
  if (!cert.verify(ca.publicKey)) return 'signed by another CA';
  if (Date.parse(cert.validTo) - Date.now() < RENEW_BEFORE_MS) return 'expiring';
  if (ip !== null && cert.checkIP(ip) === undefined && cert.checkHost(ip) === undefined)
    return `does not name ${ip}`;
  if (subject !== null) {
    // `CN=<cluster>,OU=nats-route,O=drover`: every part, in whatever order X509 lists them.
    const have = new Set(cert.subject.split('\n'));
    if (!subject.split(',').every((part) => have.has(part))) return `not a route of ${subject}`;
  }
  return null;
}

const byName = (inv: Inventory, names: readonly string[]): HostEntry[] =>
  names.flatMap((n) => inv.hosts.filter((h) => h.name === n));

/**
 * Issue what the deployed control plane lacks: NATS server certificates (`server/<host>`) and
 * controller identities (`controller/<host>`). Returns what was issued, with why.
 */
export async function prepareControlCerts(inv: Inventory, progress: Progress): Promise<string[]> {
  const dir = inv.certs;
  const d = inv.nats.deploy;
  if (dir === null || (!d && inv.controller.hosts.length === 0)) return [];
  const caPem = await readFile(caPaths(dir).certFile).catch(() => null);
  // No CA: prepareCerts says what to do (`drover certs init`).
  if (caPem === null) return [];
  const ca = new X509Certificate(caPem);
  const issued: string[] = [];
  const fail = (what: string, err: unknown): DeployError =>
    new DeployError(
      { host: 'local', failure: DeployFailure.certs, step: 'certs' },
      `cannot issue ${what} in ${dir}: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  for (const h of d ? byName(inv, d.hosts) : []) {
    const reason = await why(
      serverPaths(dir, h.name).certFile,
      ca,
      h.address,
      natsRouteUser(d!.cluster),
    );
    if (reason === null) continue;
    progress('local', `issuing the NATS server certificate of ${h.name} (${reason})`);
    try {
      await issueNatsNode(dir, d!.cluster, { name: h.name, addresses: [h.address] });
    } catch (err) {
      throw fail(`the NATS server certificate of ${h.name}`, err);
    }
    issued.push(`nats ${h.name} (${reason})`);
  }
  for (const h of byName(inv, inv.controller.hosts)) {
    const id = controllerIdentity(h);
    const reason = await why(identityPaths(dir, id).certFile, ca, null, null);
    if (reason === null) continue;
    progress('local', `issuing the controller certificate of ${h.name} (${reason})`);
    try {
      await issueIdentity(dir, id);
    } catch (err) {
      throw fail(`the controller certificate of ${h.name}`, err);
    }
    issued.push(`controller ${h.name} (${reason})`);
  }
  return issued;
}
