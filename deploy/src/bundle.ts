/**
 * The agent bundle: a self-contained tarball of the agent's binaries, each one file built with
 * esbuild from the built repository (`drover-agent`, `drover-self-checkpoint`, the agent's two
 * worker threads), koffi's native module for this machine's architecture, the host-side service
 * helper and deploy/setup-host.sh. A host runs it with its own node. The release id is a hash of
 * the files and the release label, so the same build is the same release everywhere.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { build, type Plugin } from 'esbuild';
import { DroverError, ErrorCode } from '@drover/common';

const run = promisify(execFile);

/** The repository this deployer was built in (deploy/dist → ../..). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Paths inside a release (relative to its root). The agent's files keep the paths its package
 * gives them (`bin` in agent/package.json), so a release and a checkout start it the same way.
 */
export const BundlePaths = {
  manifest: 'BUNDLE.json',
  agentMain: 'agent/dist/main.js',
  selfCheckpoint: 'agent/dist/self-checkpoint-cli.js',
  service: 'bin/drover-service.js',
  setup: 'deploy/setup-host.sh',
} as const;

/**
 * Each bundled file: where it goes in the release, and the built module it is made from
 * (relative to the repository). The workers are separate files because the agent starts them
 * by path, next to itself (`new Worker(new URL('./heartbeat-worker.js', import.meta.url))`).
 */
const ENTRY_POINTS: Readonly<Record<string, string>> = {
  [BundlePaths.agentMain]: 'agent/dist/main.js',
  [BundlePaths.selfCheckpoint]: 'agent/dist/self-checkpoint-cli.js',
  'agent/dist/heartbeat-worker.js': 'agent/dist/heartbeat-worker.js',
  'agent/dist/crypto-worker.js': 'agent/dist/crypto-worker.js',
  [BundlePaths.service]: 'deploy/dist/host/service.js',
  // The controller daemon (not its CLI): the deployer runs it on the inventory's controller hosts.
  'controller/dist/main.js': 'controller/dist/main.js',
};

/**
 * Where koffi's native module goes, next to the bundled files that load it: koffi asks for
 * `./build/koffi/<platform>_<arch>/koffi.node` relative to itself, and the bundle rewrites that
 * to this directory (see {@link koffiNative}).
 */
const KOFFI_DIR = 'agent/dist/koffi';

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
  /** Where to write the tarball (kept as it is). Default: `<cacheDir>/bundles`. */
  outDir?: string;
  /**
   * The deployer's cache: tarballs are kept (the newest few) and reused when the same release
   * exists, in `<cacheDir>/bundles`. Default {@link defaultCacheDir}.
   */
  cacheDir?: string;
  /** Release label. Default: the agent's version. */
  release?: string;
}

/** `$XDG_CACHE_HOME/drover`, else `~/.cache/drover`: the deployer's cache, never the checkout. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CACHE_HOME;
  // The XDG spec: a relative path is invalid and is ignored.
  const base = xdg?.startsWith('/') ? xdg : join(env.HOME ?? homedir(), '.cache');
  return join(base, 'drover');
}

interface Pkg {
  version?: string;
  engines?: { node?: string };
}

function readPkg(dir: string): Pkg {
  return JSON.parse(fs.readFileSync(join(dir, 'package.json'), 'utf8')) as Pkg;
}

/** koffi's name for this machine's architecture (its `build/koffi/<platform>_<arch>`). */
export function koffiTriplet(): string {
  const arch: Record<string, string> = { arm: 'armhf', riscv64: 'riscv64d' };
  return `${process.platform}_${arch[process.arch] ?? process.arch}`;
}

/**
 * koffi loads its native module with `require('./build/koffi/<triplet>/koffi.node')`, one
 * `require` per platform. Each stays a `require` of the bundled file, pointed at
 * `./koffi/<triplet>/koffi.node` (next to it); only this architecture's module is shipped there,
 * so the others are never reached on a host like this one.
 */
function koffiNative(): Plugin {
  return {
    name: 'koffi-native',
    setup(b) {
      b.onResolve({ filter: /^\.\/build\/koffi\/[^/]+\/koffi\.node$/ }, (args) => ({
        path: args.path.replace(/^\.\/build\/koffi\//, './koffi/'),
        external: true,
      }));
    },
  };
}

/**
 * Bundle every entry point into `stage` (ESM, for the hosts' node), and put koffi's native module
 * for this architecture beside the agent. The banner gives the bundled CommonJS modules the
 * `require` they expect (node: built-ins, koffi's native module).
 */
async function bundleEntryPoints(repo: string, stage: string, node: string): Promise<void> {
  const target = /(\d+)/.exec(node)?.[1] ?? '20';
  await build({
    absWorkingDir: repo,
    entryPoints: Object.entries(ENTRY_POINTS).map(([out, src]) => ({
      in: join(repo, src),
      out: out.replace(/\.js$/, ''),
    })),
    outdir: stage,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: `node${target}`,
    logLevel: 'silent',
    legalComments: 'none',
    banner: {
      js:
        "import { createRequire as __droverCreateRequire } from 'node:module';\n" +
        'const require = __droverCreateRequire(import.meta.url);',
    },
    plugins: [koffiNative()],
  }).catch((err: unknown) => {
    throw new DroverError(ErrorCode.FailedPrecondition, `bundle: esbuild failed: ${String(err)}`, {
      cause: err,
    });
  });
  const triplet = koffiTriplet();
  const native = join(repo, 'node_modules', 'koffi', 'build', 'koffi', triplet, 'koffi.node');
  needBuilt(native, `koffi has no native module for ${triplet}`);
  fs.mkdirSync(join(stage, KOFFI_DIR, triplet), { recursive: true });
  fs.copyFileSync(native, join(stage, KOFFI_DIR, triplet, 'koffi.node'));
  for (const out of [BundlePaths.agentMain, BundlePaths.selfCheckpoint, BundlePaths.service])
    fs.chmodSync(join(stage, out), 0o755);
}

/** Every regular file under `dir`, sorted, relative. */
function listFiles(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(join(dir, prefix), { withFileTypes: true })) {
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
    const data = fs.readFileSync(p);
    bytes += data.length;
    const x = fs.statSync(p).mode & 0o111 ? 'x' : '-';
    h.update(`${f}\0${x}\0${createHash('sha256').update(data).digest('hex')}\n`);
  }
  return { hash: h.digest('hex'), files: files.length, bytes };
}

/** sha256 of a file, streamed. */
export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    fs.createReadStream(path)
      .on('data', (d) => h.update(d))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

function needBuilt(path: string, why = `${path} is missing; build first (npm run build)`): void {
  if (!fs.existsSync(path)) throw new DroverError(ErrorCode.FailedPrecondition, `bundle: ${why}`);
}

/**
 * Build the agent bundle from a built repository (or reuse the tarball of the same release).
 * The tarball is written with sorted names, root ownership and normalized modes.
 */
export async function buildBundle(opts: BuildOptions = {}): Promise<Bundle> {
  const repo = opts.repoRoot ?? REPO_ROOT;
  const outDir = opts.outDir ?? join(opts.cacheDir ?? defaultCacheDir(), 'bundles');
  for (const src of Object.values(ENTRY_POINTS)) needBuilt(join(repo, src));
  const agentPkg = readPkg(join(repo, 'agent'));
  const release = opts.release ?? agentPkg.version ?? '0.0.0';
  if (!/^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$/.test(release)) {
    throw new DroverError(ErrorCode.InvalidArgument, `bundle: unsafe release label ${release}`);
  }
  const node = agentPkg.engines?.node ?? readPkg(repo).engines?.node ?? '>=20.19';
  fs.mkdirSync(outDir, { recursive: true });
  const stage = fs.mkdtempSync(join(outDir, '.stage-'));
  try {
    await bundleEntryPoints(repo, stage, node);
    fs.mkdirSync(join(stage, 'deploy'));
    fs.copyFileSync(join(repo, 'deploy', 'setup-host.sh'), join(stage, BundlePaths.setup));
    fs.chmodSync(join(stage, BundlePaths.setup), 0o755);
    fs.writeFileSync(
      join(stage, 'package.json'),
      JSON.stringify({ name: 'drover-agent-bundle', private: true, type: 'module' }, null, 2) +
        '\n',
    );
    const tree = treeHash(stage, BundlePaths.manifest);
    const id = createHash('sha256').update(`${tree.hash}\0${release}`).digest('hex').slice(0, 16);
    const path = join(outDir, `drover-agent-${release}-${id}.tar.gz`);
    if (!fs.existsSync(path)) {
      const manifest: BundleManifest = {
        format: 1,
        id,
        release,
        agentVersion: agentPkg.version ?? '0.0.0',
        files: tree.files,
        bytes: tree.bytes,
        node,
        createdAt: new Date().toISOString(),
      };
      fs.writeFileSync(join(stage, BundlePaths.manifest), JSON.stringify(manifest, null, 2) + '\n');
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
      fs.renameSync(tmp, path);
      // The default cache keeps the newest few tarballs; a chosen directory is the caller's.
      if (opts.outDir === undefined) pruneCache(outDir, 4);
    }
    return await readBundle(path);
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

/** Remove all but the `keep` newest bundle tarballs of a cache directory. */
function pruneCache(dir: string, keep: number): void {
  const tarballs = fs
    .readdirSync(dir)
    .filter((f) => /^drover-agent-.*\.tar\.gz$/.test(f))
    .map((f) => ({ f, t: fs.statSync(join(dir, f)).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  for (const { f } of tarballs.slice(keep)) fs.rmSync(join(dir, f), { force: true });
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
  return { path, sha256: await sha256File(path), size: fs.statSync(path).size, manifest };
}
