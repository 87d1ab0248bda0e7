/** sshd inside an emulated host: per-host host key, key-only root login, readiness by banner. */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import type { Host, HostProcess } from './host.js';
import { mustRun, StopWaiting, waitFor } from './proc.js';

/** What an ssh client needs to log in to a host's sshd. */
export interface SshdService {
  readonly host: string;
  readonly address: string;
  readonly port: number;
  readonly user: 'root';
  /** The host's public key, OpenSSH format (`ssh-ed25519 AAAA... comment`). */
  readonly hostPublicKey: string;
  /** The host key as the SSH wire blob ssh2's `hostVerifier` receives (base64 part decoded). */
  readonly hostKeyBlob: Buffer;
  /** Root-namespace path of the client's private key (ed25519, one per testbed run). */
  readonly clientPrivateKeyPath: string;
  readonly process: HostProcess;
}

/** What sshd needs from the testbed (structurally a `Testbed`). */
export interface SshdContext {
  readonly runId: string;
  readonly runDir: string;
}

const PORT = 22;

/** One client key generation per run, even when several sshd start at once. */
const clientKeys = new Map<string, Promise<void>>();

/** Generate an ed25519 key pair at `path` unless it exists. */
async function keygen(path: string, comment: string): Promise<void> {
  if (existsSync(path)) return;
  await mustRun(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path]);
}

/** Resolve once `address:port` sends an SSH banner. */
function banner(address: string, port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ host: address, port, timeout: 1000 });
    s.once('data', (d) => {
      s.destroy();
      if (d.toString().startsWith('SSH-')) resolve(true);
      else reject(new Error(`unexpected banner ${d.toString().slice(0, 40)}`));
    });
    s.once('timeout', () => {
      s.destroy();
      reject(new Error('timeout'));
    });
    s.once('error', reject);
  });
}

/**
 * Start `/usr/sbin/sshd -D -e` inside `h`. sshd re-execs itself, so it needs its absolute path;
 * privilege separation needs /run/sshd; StrictModes rejects an authorized_keys under a
 * world-writable directory, so it lives in the host's private /run (mode 0755), not /tmp.
 */
export async function startSshd(ctx: SshdContext, h: Host): Promise<SshdService> {
  const clientDir = join(ctx.runDir, 'ssh-client');
  mkdirSync(clientDir, { recursive: true, mode: 0o700 });
  const clientKey = join(clientDir, 'id_ed25519');
  let gen = clientKeys.get(clientKey);
  if (!gen) {
    gen = keygen(clientKey, `drover-testbed-${ctx.runId}`);
    clientKeys.set(clientKey, gen);
    gen.catch(() => clientKeys.delete(clientKey));
  }
  await gen;
  const sshDir = join(h.stateDir, 'ssh');
  mkdirSync(sshDir, { recursive: true, mode: 0o700 });
  chmodSync(sshDir, 0o700);
  const hostKey = join(sshDir, 'ssh_host_ed25519_key');
  await keygen(hostKey, `${h.name}-${ctx.runId}`);
  const hostPublicKey = readFileSync(`${hostKey}.pub`, 'utf8').trim();
  writeFileSync(
    join(sshDir, 'sshd_config'),
    [
      `ListenAddress ${h.address}`,
      `Port ${PORT}`,
      'HostKey /srv/ssh/ssh_host_ed25519_key',
      'AuthorizedKeysFile /run/ssh/authorized_keys',
      'PermitRootLogin prohibit-password',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes yes',
      'PidFile /run/sshd.pid',
      'Subsystem sftp internal-sftp',
      '',
    ].join('\n'),
  );
  const pub = readFileSync(`${clientKey}.pub`, 'utf8');
  const setup = await h.exec(
    [
      '/bin/sh',
      '-c',
      'install -d -m 0755 /run/sshd && install -d -m 0700 /run/ssh && ' +
        'cat > /run/ssh/authorized_keys && chmod 0600 /run/ssh/authorized_keys && ' +
        '/usr/sbin/sshd -t -f /srv/ssh/sshd_config',
    ],
    { input: pub },
  );
  if (setup.code !== 0) throw new Error(`sshd setup in ${h.name} failed: ${setup.stderr.trim()}`);
  const proc = await h.spawn(['/usr/sbin/sshd', '-D', '-e', '-f', '/srv/ssh/sshd_config'], {
    name: 'sshd',
  });
  let exitedEarly = false;
  void proc.exited.then(() => (exitedEarly = true));
  await waitFor(
    `sshd banner on ${h.address}:${PORT}`,
    async () => {
      if (exitedEarly)
        throw new StopWaiting(`sshd in ${h.name} exited: ${proc.output().slice(-2000)}`);
      return banner(h.address, PORT);
    },
    10_000,
    20,
  );
  const blob = hostPublicKey.split(/\s+/)[1] ?? '';
  return {
    host: h.name,
    address: h.address,
    port: PORT,
    user: 'root',
    hostPublicKey,
    hostKeyBlob: Buffer.from(blob, 'base64'),
    clientPrivateKeyPath: clientKey,
    process: proc,
  };
}
