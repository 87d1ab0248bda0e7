/**
 * SSH to one host with ssh2: the pinned host key is checked before authentication, scripts run
 * through `sh -s` (as root, or through `sudo -n` for another user), files go over SFTP.
 * Nothing here logs a key, a secret or a file's contents.
 */
import { readFileSync } from 'node:fs';
import { Client, type ConnectConfig, type SFTPWrapper } from 'ssh2';
import { DeployError, DeployFailure, tail } from './errors.js';
import { fingerprintOf } from './host-key.js';
import type { HostEntry } from './inventory.js';

/** What one remote command printed and how it ended. */
export interface RemoteResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Options of {@link SshSession.run}. */
export interface RunOptions {
  /** Positional arguments of the script (`$1`...), quoted for the remote shell. */
  args?: readonly string[];
  /** The step name in errors (`setup`, `start`, ...). */
  step: string;
  /** Kill the channel after this long. Default 120 s. */
  timeoutMs?: number;
  /** Run as the SSH user even when it is not root (staging files it owns). */
  asLoginUser?: boolean;
  /** Stream stderr lines as they come (progress of long steps). */
  onStderrLine?: (line: string) => void;
}

/** Quote one word for a POSIX shell. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Classify an ssh2 connection error into a per-host DeployError. */
function connectError(host: HostEntry, err: Error, offered: string | null): DeployError {
  const msg = err.message;
  if (offered !== null) {
    return new DeployError(
      { host: host.name, failure: DeployFailure.hostKey, step: 'connect' },
      `host key mismatch on ${host.address}:${host.port}: pinned ${host.hostKey.fingerprint}, ` +
        `the host offered ${offered}; not connecting (if the host was reinstalled, pin its new key)`,
      { cause: err },
    );
  }
  if (/authentication methods failed|authentication/i.test(msg)) {
    return new DeployError(
      { host: host.name, failure: DeployFailure.auth, step: 'connect' },
      `${host.user}@${host.address}:${host.port} refused our key (${msg})`,
      { cause: err },
    );
  }
  return new DeployError(
    { host: host.name, failure: DeployFailure.unreachable, step: 'connect' },
    `cannot reach ${host.address}:${host.port}: ${(err as NodeJS.ErrnoException).code ?? msg}`,
    { cause: err },
  );
}

/** One SSH connection to one host. */
export class SshSession {
  #sftp: Promise<SFTPWrapper> | null = null;

  private constructor(
    readonly host: HostEntry,
    private readonly client: Client,
  ) {}

  /** Whether commands need `sudo -n` (the login user is not root). */
  get sudo(): boolean {
    return this.host.user !== 'root';
  }

  /** Connect and authenticate; a host key other than the pinned one fails before authentication. */
  static connect(host: HostEntry): Promise<SshSession> {
    const config: ConnectConfig = {
      host: host.address,
      port: host.port,
      username: host.user,
      readyTimeout: host.connectTimeoutMs,
      keepaliveInterval: 15_000,
    };
    if (host.key !== null) {
      try {
        config.privateKey = readFileSync(host.key);
      } catch (err) {
        return Promise.reject(
          new DeployError(
            { host: host.name, failure: DeployFailure.auth, step: 'connect' },
            `cannot read the SSH key ${host.key}: ${(err as NodeJS.ErrnoException).code ?? err}`,
            { cause: err },
          ),
        );
      }
    } else if (process.env.SSH_AUTH_SOCK) {
      config.agent = process.env.SSH_AUTH_SOCK;
    } else {
      return Promise.reject(
        new DeployError(
          { host: host.name, failure: DeployFailure.auth, step: 'connect' },
          'no `key` in the inventory and no SSH agent (SSH_AUTH_SOCK)',
        ),
      );
    }
    let offered: string | null = null;
    config.hostVerifier = (key: Buffer): boolean => {
      const fp = fingerprintOf(key);
      if (fp === host.hostKey.fingerprint) return true;
      offered = fp;
      return false;
    };
    return new Promise((resolve, reject) => {
      const client = new Client();
      let settled = false;
      client.once('ready', () => {
        settled = true;
        // Later transport errors surface through the commands that were running.
        client.on('error', () => {});
        resolve(new SshSession(host, client));
      });
      client.on('error', (err) => {
        if (settled) return;
        settled = true;
        client.end();
        reject(connectError(host, err, offered));
      });
      client.connect(config);
    });
  }

  /**
   * Run a shell script on the host (fed on stdin to `sh -s`, so no quoting games), as root:
   * directly when the login user is root, else through `sudo -n` (which fails fast, never
   * prompts). Resolves with whatever the script did; see {@link must} for "succeed or throw".
   */
  run(script: string, opts: RunOptions): Promise<RemoteResult> {
    const args = (opts.args ?? []).map(shellQuote).join(' ');
    const sudo = this.sudo && !opts.asLoginUser ? 'sudo -n ' : '';
    const cmd = `${sudo}sh -s -- ${args}`.trimEnd();
    const timeoutMs = opts.timeoutMs ?? 120_000;
    return new Promise((resolve, reject) => {
      this.client.exec(cmd, (err, stream) => {
        if (err) {
          reject(
            new DeployError(
              { host: this.host.name, failure: DeployFailure.unreachable, step: opts.step },
              `${opts.step}: cannot open a channel: ${err.message}`,
              { cause: err },
            ),
          );
          return;
        }
        let stdout = '';
        let stderr = '';
        let partial = '';
        let timedOut = false;
        const timer = setTimeout(() => {
          timedOut = true;
          stream.close();
        }, timeoutMs);
        stream.on('data', (d: Buffer) => (stdout += d.toString()));
        stream.stderr.on('data', (d: Buffer) => {
          const s = d.toString();
          stderr += s;
          if (opts.onStderrLine) {
            partial += s;
            const lines = partial.split('\n');
            partial = lines.pop() ?? '';
            for (const l of lines) if (l.trim()) opts.onStderrLine(l);
          }
        });
        stream.on('close', (code: number | null, signal: string | null) => {
          clearTimeout(timer);
          if (timedOut) {
            reject(
              new DeployError(
                {
                  host: this.host.name,
                  failure: DeployFailure.command,
                  step: opts.step,
                  stderrTail: tail(stderr),
                },
                `${opts.step}: no answer within ${Math.round(timeoutMs / 1000)} s`,
              ),
            );
            return;
          }
          resolve({ code: code ?? null, signal: signal ?? null, stdout, stderr });
        });
        stream.end(script);
      });
    });
  }

  /** Run a script; a non-zero exit becomes a DeployError carrying the exit code and stderr's tail. */
  async must(script: string, opts: RunOptions): Promise<string> {
    const r = await this.run(script, opts);
    if (r.code === 0) return r.stdout;
    const stderrTail = tail(r.stderr);
    const sudoRefused = this.sudo && /sudo: .*password/i.test(r.stderr);
    throw new DeployError(
      {
        host: this.host.name,
        failure: sudoRefused ? DeployFailure.auth : DeployFailure.command,
        step: opts.step,
        exitCode: r.code,
        stderrTail,
      },
      `${opts.step} failed (exit ${r.code ?? r.signal})` +
        (sudoRefused ? `: ${this.host.user} needs passwordless sudo` : '') +
        (stderrTail ? `: ${stderrTail.split('\n').slice(-3).join(' | ')}` : ''),
    );
  }

  private sftp(): Promise<SFTPWrapper> {
    this.#sftp ??= new Promise((resolve, reject) =>
      this.client.sftp((err, sftp) => (err ? reject(err) : resolve(sftp))),
    );
    return this.#sftp;
  }

  private uploadError(step: string, err: unknown): DeployError {
    return new DeployError(
      { host: this.host.name, failure: DeployFailure.upload, step },
      `${step}: SFTP: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }

  /** Upload a local file (as the login user; mode 0600) with progress in bytes. */
  async put(
    localPath: string,
    remotePath: string,
    step: string,
    onProgress?: (done: number, total: number) => void,
  ): Promise<void> {
    const sftp = await this.sftp().catch((e: unknown) => Promise.reject(this.uploadError(step, e)));
    await new Promise<void>((resolve, reject) =>
      sftp.fastPut(
        localPath,
        remotePath,
        {
          mode: 0o600,
          ...(onProgress ? { step: (done, _n, total) => onProgress(done, total) } : {}),
        },
        (err) => (err ? reject(this.uploadError(step, err)) : resolve()),
      ),
    );
  }

  /** Write bytes to a remote file (as the login user; mode 0600). */
  async writeFile(remotePath: string, data: string | Buffer, step: string): Promise<void> {
    const sftp = await this.sftp().catch((e: unknown) => Promise.reject(this.uploadError(step, e)));
    await new Promise<void>((resolve, reject) =>
      sftp.writeFile(remotePath, data, { mode: 0o600 }, (err) =>
        err ? reject(this.uploadError(step, err)) : resolve(),
      ),
    );
  }

  close(): void {
    this.client.end();
  }
}

/**
 * The key a host offers, without logging in (the verifier refuses it after recording it): for
 * `keyscan`, to pin keys of new hosts after checking them out of band.
 */
export function scanHostKey(
  host: Pick<HostEntry, 'address' | 'port' | 'connectTimeoutMs'>,
): Promise<{ type: string; fingerprint: string; line: string }> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    let found: { type: string; fingerprint: string; line: string } | null = null;
    client.on('error', (err) => {
      client.end();
      if (found) resolve(found);
      else reject(err);
    });
    client.on('ready', () => client.end());
    client.connect({
      host: host.address,
      port: host.port,
      username: 'drover-keyscan',
      readyTimeout: host.connectTimeoutMs,
      hostVerifier: (key: Buffer) => {
        const len = key.readUInt32BE(0);
        const type = key.subarray(4, 4 + len).toString('latin1');
        found = {
          type,
          fingerprint: fingerprintOf(key),
          line: `${type} ${key.toString('base64')}`,
        };
        return false;
      },
    });
  });
}
