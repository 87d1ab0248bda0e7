/**
 * The `openssl` CLI and the file handling every certificate operation shares (Node can make keys
 * but not X.509 certificates or CRLs). Internal to @drover/certs: not exported from mod.ts.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, stat } from 'node:fs/promises';
import { DroverError, ErrorCode } from '@drover/common';

/** Run `openssl ARGS`; its stdout, or a DroverError with the tail of its stderr. */
export function openssl(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('openssl', [...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      reject(
        new DroverError(
          missing ? ErrorCode.FailedPrecondition : ErrorCode.Internal,
          missing
            ? 'the openssl command is needed to issue certificates (apt-get install openssl)'
            : `openssl ${args[0] ?? ''} failed: ${stderr.trim().split('\n').slice(-3).join(' ')}`,
          { cause: err, details: { args: [...args], stderr: stderr.slice(-2000) } },
        ),
      );
    });
  });
}

/** Whether `path` exists. */
export async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Make `dir` (and parents) and give it mode 0700 even if it existed. */
export async function privateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}
