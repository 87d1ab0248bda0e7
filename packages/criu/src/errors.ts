/** Typed CRIU failures: what was asked, what CRIU said, and the tail of its log. */
import { DroverError, ErrorCode, type DroverErrorOptions } from '@drover/common';

/**
 * CRIU log errors that mean nothing: every run prints the RLIMIT_NOFILE one where root lacks
 * CAP_SYS_RESOURCE (as on these machines), successful or not.
 */
const HARMLESS = [/rlimit: Can't setup RLIMIT_NOFILE/];

/** True for a CRIU log line that reports a real error (`Error (` and not known noise). */
export function isRealErrorLine(line: string): boolean {
  return line.includes('Error (') && !HARMLESS.some((re) => re.test(line));
}

/** Facts a CriuError carries. */
export interface CriuErrorFields {
  /** The request type that failed, e.g. `DUMP`. */
  request: string;
  /** CRIU's errno for the failure, when it sent one. */
  criuErrno?: number;
  /** CRIU's own error message (`cr_errmsg`), when it sent one. */
  criuMessage?: string;
  /** Path of CRIU's log for this operation, next to the images. */
  logPath?: string;
  /** The last lines of that log (errors first looked for there). */
  logTail?: string[];
}

/** A CRIU operation failed. `logTail` holds the lines an operator needs first. */
export class CriuError extends DroverError {
  readonly request: string;
  readonly criuErrno: number | undefined;
  readonly criuMessage: string | undefined;
  readonly logPath: string | undefined;
  readonly logTail: string[];

  constructor(message: string, fields: CriuErrorFields, options: DroverErrorOptions = {}) {
    const tail = fields.logTail ?? [];
    const firstError = tail.find(isRealErrorLine) ?? tail.at(-1);
    super(ErrorCode.Criu, firstError ? `${message}: ${firstError.trim()}` : message, {
      ...options,
      details: {
        request: fields.request,
        criuErrno: fields.criuErrno,
        criuMessage: fields.criuMessage,
        logPath: fields.logPath,
        logTail: tail,
        ...options.details,
      },
    });
    this.request = fields.request;
    this.criuErrno = fields.criuErrno;
    this.criuMessage = fields.criuMessage;
    this.logPath = fields.logPath;
    this.logTail = tail;
  }
}

/** No usable CRIU on this host (missing, too old, or `criu check` fails). */
export class CriuNotProvisionedError extends DroverError {
  constructor(message: string, options: DroverErrorOptions = {}) {
    super(
      ErrorCode.CriuNotProvisioned,
      `${message} (run deploy/setup-host.sh as root to install CRIU >= 4.2)`,
      options,
    );
  }
}
