/**
 * CRIU's own ZDTM static tests on this machine: built, in a work directory outside the
 * repository, from the Debian source package of the installed CRIU that deploy/setup-host.sh
 * unpacked; run with raw CRIU through CRIU's `zdtm.py` (the `h` flavour); and described (each
 * test's `.desc`) for the run through Drover (zdtm-drover.ts).
 */
import { execFile, spawn } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** A PATH whose python3 is Debian's (zdtm.py needs python3-protobuf; a pyenv one may not have it). */
export const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Where the suite lives once prepared. */
export interface ZdtmTree {
  /** The copy of CRIU's source tree, built. */
  root: string;
  /** `<root>/test`: where zdtm.py runs. */
  testDir: string;
  criuBin: string;
}

/** What one test's `.desc` says (the fields this harness uses). */
export interface ZdtmDesc {
  flags: string[];
  opts: string[];
  dopts: string[];
  ropts: string[];
  timeoutSec: number;
  hook: boolean;
}

/** The outcome of one test. */
export interface ZdtmResult {
  test: string;
  ok: boolean;
  /** Where it failed (start, checkpoint, result...) and what said so. */
  why?: string;
}

/** Run `cmd`, its output appended to `log`; resolves with its exit code. */
export function runLogged(
  cmd: string,
  args: readonly string[],
  log: string,
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<number> {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(log, { flags: 'a' });
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    child.stdout.pipe(out, { end: false });
    child.stderr.pipe(out, { end: false });
    child.once('error', reject);
    child.once('close', (code) => {
      out.end();
      resolve(code ?? 1);
    });
  });
}

/**
 * Copy the installed CRIU's Debian source tree (`<buildDir>/criu-<version>`, what setup
 * built CRIU from) to `<work>/criu` unless already there, and build zdtm's tests and the
 * Python bindings zdtm.py uses. Needs the build dependencies setup installs, and
 * libnl-route-3-dev for one test (netns_sub_veth; the rest build without it).
 */
export async function prepareZdtm(work: string, buildDir: string, log: string): Promise<ZdtmTree> {
  const criuBin = (await exec('which', ['criu'], { env: { PATH: SYSTEM_PATH } })).stdout.trim();
  const version = /Version:\s*(\S+)/.exec((await exec(criuBin, ['--version'])).stdout)?.[1];
  const source = join(buildDir, `criu-${version}`);
  const root = join(work, 'criu');
  if (!existsSync(root)) {
    if (!existsSync(join(source, 'test', 'zdtm.py'))) {
      throw new Error(
        `no Debian source of CRIU ${version} at ${source}: deploy/setup-host.sh unpacks it there when it builds CRIU`,
      );
    }
    await exec('cp', ['-a', source, root]);
  }
  const env = { ...process.env, PATH: SYSTEM_PATH };
  // -k: a test whose build needs something missing here is left out; the others are built.
  await runLogged('make', ['-k', '-j2', '-C', join(root, 'test', 'zdtm')], log, { env });
  await runLogged('make', ['-j2', '-C', root, 'lib'], log, { env });
  return { root, testDir: join(root, 'test'), criuBin };
}

/**
 * `zdtm.py run -T REGEX -f h --keep-going` with raw CRIU. Returns the tests it selected (its
 * `-a`-style choice: flavour, features and "noauto" applied) with their outcomes, from its
 * TAP report.
 */
export async function runRawZdtm(
  tree: ZdtmTree,
  regex: string,
  work: string,
  log: string,
  asRoot = false,
): Promise<ZdtmResult[]> {
  const report = join(work, asRoot ? 'raw-report-root' : 'raw-report');
  await exec('rm', ['-rf', report]);
  await runLogged(
    '/usr/bin/python3',
    [
      'zdtm.py',
      'run',
      '-T',
      regex,
      '-f',
      'h',
      '--keep-going',
      '-k',
      'never',
      '--criu-bin',
      tree.criuBin,
      '--crit-bin',
      join(tree.root, 'crit', 'crit'),
      '--report',
      report,
    ],
    log,
    { cwd: tree.testDir, env: { ...process.env, PATH: SYSTEM_PATH, ...rootEnv(asRoot) } },
  );
  return parseTap(readFileSync(join(report, 'criu-testreport.tap'), 'utf8'));
}

/**
 * With `asRoot`, tests keep running as root: zdtm's test library skips its switch to the
 * unprivileged ZDTM_UID when ZDTM_ROOTLESS is set (zdtm.py passes its own environment on to
 * every test). On a machine whose root lacks CAP_SYS_RESOURCE CRIU cannot dump a process of
 * another uid, so only this shows what else fails; a few tests skip privileged checks then.
 */
export function rootEnv(asRoot: boolean): Record<string, string> {
  return asRoot ? { ZDTM_ROOTLESS: '1' } : {};
}

/** Outcomes from zdtm.py's TAP report; skipped tests are left out. */
export function parseTap(text: string): ZdtmResult[] {
  const out: ZdtmResult[] = [];
  for (const line of text.split('\n')) {
    const m = /^(not ok|ok) \d+ - (\S+)(.*)$/.exec(line);
    if (!m?.[2]) continue;
    if (/#\s*SKIP/i.test(m[3] ?? '')) continue;
    const test = m[2].replace(/^zdtm\/static\//, '');
    out.push(m[1] === 'ok' ? { test, ok: true } : { test, ok: false, why: (m[3] ?? '').trim() });
  }
  return out;
}

/** Read the `.desc` files of `tests` (Python literals) through Python's own parser. */
export async function readDescs(
  staticDir: string,
  tests: readonly string[],
): Promise<Map<string, ZdtmDesc>> {
  const code = [
    'import ast, json, os, sys',
    'out = {}',
    'for t in sys.argv[1:]:',
    '    p = t + ".desc"',
    '    d = ast.literal_eval(open(p).read()) if os.path.exists(p) else {}',
    '    out[t] = {k: v for k, v in d.items() if isinstance(v, (str, int))}',
    'print(json.dumps(out))',
  ].join('\n');
  const { stdout } = await exec('/usr/bin/python3', ['-c', code, ...tests], {
    cwd: staticDir,
    maxBuffer: 16 * 1024 * 1024,
  });
  const raw = JSON.parse(stdout) as Record<string, Record<string, string | number>>;
  const words = (v: string | number | undefined): string[] =>
    typeof v === 'string' ? v.split(/\s+/).filter(Boolean) : [];
  return new Map(
    tests.map((t) => {
      const d = raw[t] ?? {};
      return [
        t,
        {
          flags: words(d['flags']),
          opts: words(d['opts']),
          dopts: words(d['dopts']),
          ropts: words(d['ropts']),
          timeoutSec: typeof d['timeout'] === 'number' ? d['timeout'] : 30,
          hook: existsSync(join(staticDir, `${t}.hook`)),
        },
      ];
    }),
  );
}
