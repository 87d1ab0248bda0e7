/**
 * The agent bundle: a self-contained tarball of the built agent (its dist, the workspace packages
 * and third-party modules it needs, laid out as a node_modules tree), the host-side service
 * helper and deploy/setup-host.sh. A host runs it with its own node. The release id is a hash of
 * the files and the release label, so the same build is the same release everywhere.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  cpSync,
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DroverError, ErrorCode } from '@drover/common';

const run = promisify(execFile);

/** The repository this deployer was built in (deploy/dist → ../..). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Paths inside a release (relative to its root). */
export const BundlePaths = {
  manifest: 'BUNDLE.json',
  agentMain: 'agent/dist/main.js',
  service: 'bin/drover-service.js',
  setup: 'deploy/setup-host.sh',
} as const;

/** BUNDLE.json: what a release is. */
export interface BundleManifest {
  format: 1;
  /** 16 hex digits: hash of every file (path, exec bit, content) and the release label. */
  id: string;
  /** Operator-chosen label (default: the agent's package version). */
  release: string;
  agentVersion: string;
  files: number;
  bytes: number;
  /** The node versions the agent supports (the agent package's engines, or the repo's). */
  node: string;
  createdAt: string;
}

/** A bundle tarball on this machine. */
export interface Bundle {
  path: string;
  /** sha256 of the tarball (checked on the host after the upload). */
  sha256: string;
  size: number;
  manifest: BundleManifest;
}

/** Options of {@link buildBundle}. */
export interface BuildOptions {
  /** Where the built repository is. Default: the one this deployer runs from. */
  repoRoot?: string;
  /** Where tarballs are kept (and reused when the same release exists). Default `<repo>/.drover/bundles`. */
  outDir?: string;
  /** Release label. Default: the agent's version. */
  release?: string;
}

interface Pkg {
  name?: string;
  version?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  engines?: { node?: string };
  workspaces?: string[];
}

function readPkg(dir: string): Pkg {
  return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Pkg;
}

/** Node's lookup: `<dir>/node_modules/<name>`, walking up; the real path, or null. */
function findPackage(name: string, from: string, stopAt: string): string | null {
  for (let d = from; ; d = dirname(d)) {
    const c = join(d, 'node_modules', name);
    if (existsSync(join(c, 'package.json'))) return realpathSync(c);
    if (d === stopAt || dirname(d) === d) return null;
  }
}

/**
 * Files of a workspace package a host needs: package.json and compiled JS, tests excluded (and
 * the controller's CLI: hosts run its daemon only).
 */
function workspaceFilter(src: string, dst: string): (path: string) => boolean {
  const cli = `dist${sep}cli`;
  return (p) => {
    const rel = relative(src, p);
    if (rel === '' || rel === 'package.json' || rel === 'dist') return true;
    if (!rel.startsWith(`dist${sep}`)) return false;
    if (dst === 'controller' && (rel === cli || rel.startsWith(`${cli}${sep}`))) return false;
    if (statSync(p).isDirectory()) return true;
    return rel.endsWith('.js') && !rel.endsWith('.test.js');
  };
}

/** Third-party packages go whole, minus nested node_modules (walked separately), types and dead weight. */
function moduleFilter(src: string, name: string): (path: string) => boolean {
  return (p) => {
    const rel = relative(src, p);
    const parts = rel.split(sep);
    if (parts.includes('node_modules') || parts.includes('.bin')) return false;
    // Types and source maps are never loaded at run time.
    if (/\.d\.[cm]?ts$|\.map$/.test(rel)) return false;
    // koffi ships prebuilt binaries for every OS plus its C++ sources: keep Linux builds only.
    if (name === 'koffi') {
      if (['src', 'vendor', 'doc'].includes(parts[0] ?? '')) return false;
      if (parts[0] === 'build' && parts[1] === 'koffi' && parts[2] !== undefined)
        return /^(linux|musl)_/.test(parts[2]);
    }
    return true;
  };
}

/** Every package the agent loads at run time: [real dir, path inside the bundle, kind]. */
function agentClosure(repo: string): { src: string; dst: string; workspace: boolean }[] {
  const root = readPkg(repo);
  const workspaces = new Map<string, string>(); // real dir → bundle path
  for (const w of root.workspaces ?? []) {
    const dir = realpathSync(join(repo, w));
    const name = readPkg(dir).name;
    if (name) workspaces.set(dir, w === 'agent' ? 'agent' : `node_modules/${name}`);
  }
  const bundlePath = (dir: string): string => {
    let best = '';
    for (const w of workspaces.keys()) {
      if (dir === w) return workspaces.get(w) ?? '';
      if (dir.startsWith(`${w}${sep}node_modules${sep}`) && w.length > best.length) best = w;
    }
    if (best) return `${workspaces.get(best)}${dir.slice(best.length)}`;
    return relative(repo, dir);
  };
  const out: { src: string; dst: string; workspace: boolean }[] = [];
  const seen = new Set<string>();
  const visit = (dir: string): void => {
    if (seen.has(dir)) return;
    seen.add(dir);
    out.push({ src: dir, dst: bundlePath(dir), workspace: workspaces.has(dir) });
    const pkg = readPkg(dir);
    for (const dep of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
      if (dep.startsWith('@types/')) continue; // types only, never loaded
      const found = findPackage(dep, dir, repo);
      if (found) visit(found);
      else if (!pkg.optionalDependencies?.[dep]) {
        throw new DroverError(
          ErrorCode.FailedPrecondition,
          `bundle: ${pkg.name ?? dir} needs ${dep}, which is not installed (npm ci?)`,
        );
      }
    }
  };
  visit(realpathSync(join(repo, 'agent')));
  // The controller daemon too (the deployer runs it on the inventory's controller hosts): its
  // own files only, not the CLI's dependencies; it loads nothing the agent does not.
  out.push({ src: realpathSync(join(repo, 'controller')), dst: 'controller', workspace: true });
  return out;
}

/** Every regular file under `dir`, sorted, relative. */
function listFiles(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...listFiles(dir, rel));
    else if (e.isFile()) out.push(rel);
  }
  return out.sort();
}

/** Hash of a tree: each file's path, exec bit and content. */
function treeHash(dir: string, exclude: string): { hash: string; files: number; bytes: number } {
  const h = createHash('sha256');
  let bytes = 0;
  const files = listFiles(dir).filter((f) => f !== exclude);
  for (const f of files) {
    const p = join(dir, f);
    const data = readFileSync(p);
    bytes += data.length;
    const x = statSync(p).mode & 0o111 ? 'x' : '-';
    h.update(`${f}\0${x}\0${createHash('sha256').update(data).digest('hex')}\n`);
  }
  return { hash: h.digest('hex'), files: files.length, bytes };
}

/** sha256 of a file, streamed. */
export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (d) => h.update(d))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

function needBuilt(path: string): void {
  if (!existsSync(path)) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `bundle: ${path} is missing; build first (npm run build)`,
    );
  }
}

/**
 * Build the agent bundle from a built repository (or reuse the tarball of the same release).
 * The tarball is written with sorted names, root ownership and normalized modes.
 */
export async function buildBundle(opts: BuildOptions = {}): Promise<Bundle> {
  const repo = opts.repoRoot ?? REPO_ROOT;
  const outDir = opts.outDir ?? join(repo, '.drover', 'bundles');
  const service = join(repo, 'deploy', 'dist', 'host', 'service.js');
  needBuilt(join(repo, 'agent', 'dist', 'main.js'));
  needBuilt(join(repo, 'controller', 'dist', 'main.js'));
  needBuilt(service);
  const agentPkg = readPkg(join(repo, 'agent'));
  const release = opts.release ?? agentPkg.version ?? '0.0.0';
  if (!/^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$/.test(release)) {
    throw new DroverError(ErrorCode.InvalidArgument, `bundle: unsafe release label ${release}`);
  }
  mkdirSync(outDir, { recursive: true });
  const stage = mkdtempSync(join(outDir, '.stage-'));
  try {
    for (const { src, dst, workspace } of agentClosure(repo)) {
      const name = readPkg(src).name ?? '';
      cpSync(src, join(stage, dst), {
        recursive: true,
        dereference: true,
        filter: workspace ? workspaceFilter(src, dst) : moduleFilter(src, name),
      });
    }
    mkdirSync(join(stage, 'bin'));
    cpSync(service, join(stage, BundlePaths.service));
    chmodSync(join(stage, BundlePaths.service), 0o755);
    mkdirSync(join(stage, 'deploy'));
    cpSync(join(repo, 'deploy', 'setup-host.sh'), join(stage, BundlePaths.setup));
    chmodSync(join(stage, BundlePaths.setup), 0o755);
    writeFileSync(
      join(stage, 'package.json'),
      JSON.stringify({ name: 'drover-agent-bundle', private: true, type: 'module' }, null, 2) +
        '\n',
    );
    const tree = treeHash(stage, BundlePaths.manifest);
    const id = createHash('sha256').update(`${tree.hash}\0${release}`).digest('hex').slice(0, 16);
    const path = join(outDir, `drover-agent-${release}-${id}.tar.gz`);
    if (!existsSync(path)) {
      const manifest: BundleManifest = {
        format: 1,
        id,
        release,
        agentVersion: agentPkg.version ?? '0.0.0',
        files: tree.files,
        bytes: tree.bytes,
        node: agentPkg.engines?.node ?? readPkg(repo).engines?.node ?? '>=20.19',
        createdAt: new Date().toISOString(),
      };
      writeFileSync(join(stage, BundlePaths.manifest), JSON.stringify(manifest, null, 2) + '\n');
      const tmp = `${path}.${process.pid}.tmp`;
      await run('tar', [
        '-C',
        stage,
        '--sort=name',
        '--owner=0',
        '--group=0',
        '--numeric-owner',
        '--mode=u+rwX,go+rX,go-w',
        '-czf',
        tmp,
        '.',
      ]);
      renameSync(tmp, path);
      // The default cache keeps the newest few tarballs; a chosen directory is the caller's.
      if (opts.outDir === undefined) pruneCache(outDir, 4);
    }
    return await readBundle(path);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

/** Remove all but the `keep` newest bundle tarballs of a cache directory. */
function pruneCache(dir: string, keep: number): void {
  const tarballs = readdirSync(dir)
    .filter((f) => /^drover-agent-.*\.tar\.gz$/.test(f))
    .map((f) => ({ f, t: statSync(join(dir, f)).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  for (const { f } of tarballs.slice(keep)) rmSync(join(dir, f), { force: true });
}

/** A bundle tarball made earlier (`drover-deploy bundle`): its manifest and checksum. */
export async function readBundle(path: string): Promise<Bundle> {
  let manifest: BundleManifest;
  try {
    const { stdout } = await run('tar', ['-xzOf', path, `./${BundlePaths.manifest}`], {
      maxBuffer: 1 << 20,
    });
    manifest = JSON.parse(stdout) as BundleManifest;
  } catch (err) {
    throw new DroverError(ErrorCode.InvalidArgument, `${path} is not a Drover agent bundle`, {
      cause: err,
    });
  }
  if (manifest.format !== 1 || !/^[0-9a-f]{16}$/.test(manifest.id)) {
    throw new DroverError(ErrorCode.InvalidArgument, `${path}: unknown bundle format`);
  }
  return { path, sha256: await sha256File(path), size: statSync(path).size, manifest };
}
