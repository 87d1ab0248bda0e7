/**
 * The deployer's side of `drover certs`: before `install` or `upgrade` puts an agent config on
 * any host, each inventory host's agent certificate (and the deployer's own operator identity)
 * is issued from the certificates directory when missing, and the NATS security config is
 * regenerated so the new identities may connect (and reloaded, when the inventory says how).
 * Without a certificates directory those verbs refuse unless `--insecure` says otherwise.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import {
  caPaths,
  identityPaths,
  issueIdentity,
  NATS_SECURITY_FILE,
  writeNatsSecurityConfig,
  type CertFiles,
} from '@drover/certs';
import { DroverError, ErrorCode } from '@drover/common';
import type { Identity } from '@drover/protocol';
import { join } from 'node:path';
import { DeployError, DeployFailure, tail } from './errors.js';
import type { Progress } from './fleet.js';
import type { HostEntry, Inventory } from './inventory.js';

/** A certificate due to expire within this long is issued again. */
const RENEW_BEFORE_MS = 30 * 24 * 3600 * 1000;
const RELOAD_TIMEOUT_MS = 60_000;

/** The agent certificate of `host` in the certificates directory `dir`. */
export function agentCertFiles(dir: string, host: string): CertFiles {
  return identityPaths(dir, { role: 'agent', name: host });
}

/**
 * The files the deployer presents to NATS to reach the controller: its operator identity in the
 * certificates directory, or the inventory's `nats.tls` (insecure mode), or none.
 */
export function deployerTls(
  inv: Inventory,
): { caFile?: string; certFile?: string; keyFile?: string } | null {
  if (inv.certs !== null)
    return identityPaths(inv.certs, { role: 'operator', name: inv.controller.operator });
  return inv.nats.tls ?? null;
}

/**
 * The names peers check an agent's stream certificate against: its address, and the stream's
 * listen address unless it is a wildcard (the agent then advertises an address of its own).
 */
export function agentSans(host: HostEntry): string[] {
  const listen = host.agent.streamListen.replace(/:\d+$/, '');
  const names = [host.address];
  if (listen !== '0.0.0.0' && listen !== '::' && listen !== '') names.push(listen);
  return [...new Set(names)];
}

/**
 * Refuse, before anything changes anywhere, a verb that writes agent configs without a
 * certificates directory unless `insecure`; refuse both at once (they contradict each other).
 */
export function requireSecurity(inv: Inventory, insecure: boolean): void {
  if (insecure && inv.certs !== null) {
    throw new DroverError(
      ErrorCode.InvalidArgument,
      `--insecure and the certificates directory ${inv.certs} exclude each other: ` +
        'drop one (--insecure deploys plain NATS and streams)',
    );
  }
  if (!insecure && inv.certs === null) {
    throw new DeployError(
      { host: '*', failure: DeployFailure.insecure, step: 'certs' },
      `no certificates directory: name it in ${inv.path} (\`certs: /etc/drover/certs\`) or ` +
        'with --certs DIR (made by `drover certs init`); the deployer issues each agent its ' +
        'certificate from it. --insecure deploys plain NATS and streams instead (anyone who ' +
        'reaches NATS may command the agents). Nothing was changed.',
    );
  }
}

/** Why the certificate at `files` must be issued (again), or null when it is fine. */
async function reissueReason(
  files: CertFiles,
  ca: X509Certificate,
  sans: readonly string[],
): Promise<string | null> {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(await readFile(files.certFile));
    await readFile(files.keyFile);
  } catch {
    return 'missing';
  }
  if (!cert.verify(ca.publicKey)) return 'signed by another CA';
  if (Date.parse(cert.validTo) - Date.now() < RENEW_BEFORE_MS) return 'expiring';
  for (const n of sans) {
    const ok = isIP(n) ? cert.checkIP(n) !== undefined : cert.checkHost(n) !== undefined;
    if (!ok) return `does not name ${n}`;
  }
  return null;
}

/** What {@link prepareCerts} did. */
export interface CertsReport {
  /** The certificates directory. */
  readonly dir: string;
  /** The regenerated NATS security config. */
  readonly natsConfig: string;
  /** Identities issued now, with why (`agent h1 (missing)`). */
  readonly issued: readonly string[];
  /** The NATS security config differs from before (new identities). */
  readonly changed: boolean;
  /** The inventory's `nats.reload` ran (only when it changed). */
  readonly reloaded: boolean;
}

function certsError(step: string, message: string, cause?: unknown): DeployError {
  return new DeployError({ host: 'local', failure: DeployFailure.certs, step }, message, {
    ...(cause === undefined ? {} : { cause }),
  });
}

/** Run the inventory's `nats.reload` command (`DROVER_NATS_SECURITY_CONF`: the config). */
export function runReload(command: string, conf: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(
      '/bin/sh',
      ['-c', command],
      {
        encoding: 'utf8',
        timeout: RELOAD_TIMEOUT_MS,
        env: { ...process.env, DROVER_NATS_SECURITY_CONF: conf },
      },
      (err, _stdout, stderr) => {
        if (!err) return resolve();
        const code = typeof err.code === 'number' ? err.code : null;
        reject(
          new DeployError(
            {
              host: 'local',
              failure: DeployFailure.certs,
              step: 'nats-reload',
              exitCode: code,
              stderrTail: tail(stderr),
            },
            `nats.reload failed (exit ${code ?? err.signal ?? '?'}): ${tail(stderr, 2) || err.message}; ` +
              'no host was changed',
            { cause: err },
          ),
        );
      },
    );
  });
}

/**
 * Issue what is missing in the inventory's certificates directory — every inventory host's agent
 * certificate (also re-issued for the `selected` hosts when it is expiring, from another CA, or
 * does not name the host's address) and the deployer's operator identity — then regenerate the
 * NATS security config and, when it changed, run `nats.reload`. Touches no host.
 */
export async function prepareCerts(
  inv: Inventory,
  selected: readonly HostEntry[],
  progress: Progress,
): Promise<CertsReport> {
  const dir = inv.certs;
  if (dir === null) throw certsError('certs', 'no certificates directory');
  let ca: X509Certificate;
  try {
    ca = new X509Certificate(await readFile(caPaths(dir).certFile));
  } catch (err) {
    throw certsError(
      'certs',
      `${dir} has no CA certificate (ca.crt): make the directory with ` +
        `\`drover certs init --dir ${dir} --nats-address ADDRESS\``,
      err,
    );
  }
  const wanted: { id: Identity; sans: string[]; renew: boolean }[] = [
    ...inv.hosts.map((h) => ({
      id: { role: 'agent' as const, name: h.name },
      sans: agentSans(h),
      renew: selected.some((s) => s.name === h.name),
    })),
    { id: { role: 'operator', name: inv.controller.operator }, sans: [], renew: true },
  ];
  const issued: string[] = [];
  for (const w of wanted) {
    const files = identityPaths(dir, w.id);
    const why = await reissueReason(files, ca, w.sans);
    if (why === null || (why !== 'missing' && !w.renew)) continue;
    progress('local', `issuing the ${w.id.role} certificate of ${w.id.name} (${why})`);
    try {
      await issueIdentity(dir, w.id, w.sans.length > 0 ? { sans: w.sans } : {});
    } catch (err) {
      throw certsError(
        'certs',
        `cannot issue the ${w.id.role} certificate of ${w.id.name} in ${dir}: ` +
          `${err instanceof Error ? err.message : String(err)} (ca.key is needed to issue)`,
        err,
      );
    }
    issued.push(`${w.id.role} ${w.id.name} (${why})`);
  }
  const confPath = join(dir, NATS_SECURITY_FILE);
  const before = await readFile(confPath, 'utf8').catch(() => null);
  try {
    await writeNatsSecurityConfig(dir);
  } catch (err) {
    throw certsError(
      'nats-config',
      `cannot regenerate ${confPath}: ${err instanceof Error ? err.message : String(err)}`,
      err,
    );
  }
  const changed = (await readFile(confPath, 'utf8')) !== before;
  let reloaded = false;
  if (changed && inv.nats.reload !== undefined) {
    progress('local', `NATS security config ${confPath} changed: running nats.reload`);
    await runReload(inv.nats.reload, confPath);
    reloaded = true;
  } else if (changed) {
    progress(
      'local',
      `NATS security config ${confPath} changed (new identities): reload nats-server ` +
        '(`nats-server --signal reload`) so they may connect; agents retry until then',
    );
  }
  return { dir, natsConfig: confPath, issued, changed, reloaded };
}

/** One line for people: what happened to the certificates and the NATS config. */
export function certsSummary(r: CertsReport): string {
  const issued = r.issued.length > 0 ? `issued ${r.issued.join(', ')}` : 'no certificate issued';
  const conf = !r.changed
    ? `${r.natsConfig} unchanged`
    : r.reloaded
      ? `${r.natsConfig} regenerated, nats.reload ran`
      : `${r.natsConfig} regenerated: reload nats-server (\`nats-server --signal reload\`) ` +
        'so the new identities may connect';
  return `certificates ${r.dir}: ${issued}; NATS security config ${conf}`;
}
