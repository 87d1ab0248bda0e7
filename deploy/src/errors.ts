/** The deployer's one error class: what went wrong on which host, at which step. */
import { DroverError, ErrorCode, type DroverErrorOptions } from '@drover/common';

/**
 * Why a host failed, for operators and for branching (with `code`): the SSH handshake could not
 * reach it, its key did not match the pinned one, it refused our key, a command failed, ...
 */
export const DeployFailure = {
  /** TCP connect or SSH handshake failed or timed out. */
  unreachable: 'unreachable',
  /** The host offered a key other than the pinned one. */
  hostKey: 'host-key',
  /** The host refused our key (or sudo needs a password). */
  auth: 'auth',
  /** A remote command exited non-zero. */
  command: 'command',
  /** An SFTP upload failed. */
  upload: 'upload',
  /** The host lacks something Drover needs (kernel, node, CRIU, cgroups). */
  requirement: 'requirement',
  /** The controller, a drain or a heartbeat did not do what was needed. */
  cluster: 'cluster',
  /** Refused to act: running jobs, a different release running, ... */
  refused: 'refused',
  /**
   * Refused to put an agent config on any host without a certificates directory (no `certs:`,
   * no `--certs`) and without `--insecure`; the fleet-wide refusal has host `*`.
   */
  insecure: 'insecure',
  /** The local certificates directory or the NATS reload could not do what was needed. */
  certs: 'certs',
} as const;
export type DeployFailure = (typeof DeployFailure)[keyof typeof DeployFailure];

/** Where a remote step failed. Secrets never reach these fields. */
export interface DeployErrorInfo {
  host: string;
  failure: DeployFailure;
  /** The step that failed (`connect`, `setup`, `start`, ...). */
  step: string;
  /** A remote command's exit code, if one failed. */
  exitCode?: number | null;
  /** The last lines of its stderr. */
  stderrTail?: string;
}

const CODES: Record<DeployFailure, DroverError['code']> = {
  unreachable: ErrorCode.Unavailable,
  'host-key': ErrorCode.FailedPrecondition,
  auth: ErrorCode.FailedPrecondition,
  command: ErrorCode.Internal,
  upload: ErrorCode.Internal,
  requirement: ErrorCode.FailedPrecondition,
  cluster: ErrorCode.Unavailable,
  refused: ErrorCode.FailedPrecondition,
  // A missing flag or inventory field (exit 2, like any bad argument).
  insecure: ErrorCode.InvalidArgument,
  certs: ErrorCode.FailedPrecondition,
};

/** A host-level failure of a deploy step. */
export class DeployError extends DroverError {
  readonly host: string;
  readonly failure: DeployFailure;
  readonly step: string;
  readonly exitCode: number | null;
  readonly stderrTail: string;

  constructor(info: DeployErrorInfo, message: string, options: DroverErrorOptions = {}) {
    super(CODES[info.failure], message, {
      ...options,
      retryable: options.retryable ?? info.failure === DeployFailure.unreachable,
      details: {
        host: info.host,
        failure: info.failure,
        step: info.step,
        exitCode: info.exitCode ?? null,
        ...options.details,
      },
    });
    this.host = info.host;
    this.failure = info.failure;
    this.step = info.step;
    this.exitCode = info.exitCode ?? null;
    this.stderrTail = info.stderrTail ?? '';
  }
}

/** The last `lines` non-empty lines of `text`. */
export function tail(text: string, lines = 8): string {
  return text
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l !== '')
    .slice(-lines)
    .join('\n');
}
