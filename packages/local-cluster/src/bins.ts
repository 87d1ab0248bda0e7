/**
 * Where the built drover daemons are. A library never imports an app, so the testbed starts the
 * agent and the controller as processes, by the bin paths their installed packages declare.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DroverError, ErrorCode } from '@drover/common';

/** The daemons the testbed runs, and the packages that ship them. */
export const DROVER_BINS = {
  'drover-agent': '@drover/agent',
  'drover-controller': '@drover/controller',
} as const;
export type DroverBin = keyof typeof DROVER_BINS;

/**
 * Absolute path of a built drover bin: the package is looked up in `node_modules` from this
 * library's own directory upwards (as Node resolves packages; in the repository that finds the
 * workspace links), and the path comes from its package.json `bin`. NOT_FOUND, saying to build,
 * when the package is missing or not built.
 */
export function droverBin(bin: DroverBin): string {
  const pkg = DROVER_BINS[bin];
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const manifest = join(dir, 'node_modules', pkg, 'package.json');
    if (existsSync(manifest)) {
      const json = JSON.parse(readFileSync(manifest, 'utf8')) as { bin?: Record<string, string> };
      const rel = json.bin?.[bin];
      const path = rel === undefined ? undefined : resolve(dirname(realpathSync(manifest)), rel);
      if (path === undefined || !existsSync(path)) {
        throw new DroverError(ErrorCode.NotFound, `${bin} is not built (run \`npm run build\`)`, {
          details: { bin, package: pkg, path },
        });
      }
      return path;
    }
    if (dirname(dir) === dir) break;
  }
  throw new DroverError(ErrorCode.NotFound, `${pkg} is not installed, so ${bin} cannot start`, {
    details: { bin, package: pkg },
  });
}
