#!/usr/bin/env node
/**
 * `drover-deploy`: install, upgrade and run Drover agents on hosts reached over SSH, from an
 * inventory. Parses flags (yargs, strict), runs one verb across the chosen hosts, prints the
 * per-host result table (or `--json`), and maps the outcome to an exit code in one place.
 */
import type { Argv } from 'yargs';
import { runCli, ShownFailure, type ExitCodeTable } from '@drover/cli-kit';
import { ErrorCode } from '@drover/common';
import { certsSummary, prepareCerts, requireSecurity, type CertsReport } from './agent-certs.js';
import { buildBundle, readBundle, type Bundle } from './bundle.js';
import { check, checkNats } from './commands/check.js';
import {
  checkControlPlane,
  controlPlaneStatus,
  installControlPlane,
  members,
  refreshNatsServers,
  uninstallControlPlane,
  upgradeControlPlane,
  wholeFleet,
} from './commands/control-plane.js';
import { prepareControlCerts } from './control-certs.js';
import { writeDeployContext } from './deploy-context.js';
import { deployContext, type DeployContext } from './commands/context.js';
import { install } from './commands/install.js';
import { start, status, stop } from './commands/service.js';
import { uninstall } from './commands/uninstall.js';
import { upgrade } from './commands/upgrade.js';
import { DeployError, DeployFailure } from './errors.js';
import { failedResult, type HostResult } from './fleet.js';
import { loadInventory, parseHostKey, selectHosts } from './inventory.js';
import { renderResults, table } from './report.js';
import { scanHostKey } from './ssh.js';

/** Exit codes of drover-deploy. */
export const ExitCode = {
  ok: 0,
  /** At least one host failed (the table says which and why). */
  hostFailed: 1,
  /**
   * Bad flags or an invalid inventory, or `install`/`upgrade` without a certificates directory
   * and without `--insecure` (nothing was done).
   */
  usage: 2,
  /** A host named on the command line is not in the inventory. */
  notFound: 3,
  /** The controller (through NATS) could not be reached. */
  unavailable: 5,
} as const;

interface Globals {
  inventory: string;
  certs?: string;
  json: boolean;
  parallel: number;
  label: string[];
  quiet: boolean;
  'cache-dir'?: string;
}
type HostArgs = Globals & { hosts: string[] };

/** The table the runner (`@drover/cli-kit`) takes every exit code from. */
const exitCodes: ExitCodeTable = {
  failed: ExitCode.hostFailed,
  usage: ExitCode.usage,
  byCode: {
    [ErrorCode.InvalidArgument]: ExitCode.usage,
    [ErrorCode.NotFound]: ExitCode.notFound,
    [ErrorCode.Unavailable]: ExitCode.unavailable,
    [ErrorCode.Timeout]: ExitCode.unavailable,
  },
};

function progressPrinter(argv: Globals): (host: string, message: string) => void {
  return (host, message) => {
    if (!argv.quiet) process.stderr.write(`${host}: ${message}\n`);
  };
}

/**
 * Load the inventory, choose hosts, run `body`, print results, set the exit code. A verb that
 * writes agent configs (`writesConfig`) first requires a certificates directory or `--insecure`,
 * then issues what is missing in it and regenerates the NATS security config: all before any host
 * is touched.
 */
async function runVerb(
  verb: string,
  argv: HostArgs & { wait?: boolean; insecure?: boolean },
  body: (ctx: DeployContext) => Promise<{ results: HostResult[]; extra?: Record<string, unknown> }>,
  writesConfig = false,
): Promise<void> {
  const inv = loadInventory(argv.inventory, argv.certs !== undefined ? { certs: argv.certs } : {});
  const hosts = selectHosts(inv, argv.hosts, argv.label);
  let certs: CertsReport | null = null;
  if (writesConfig) {
    requireSecurity(inv, argv.insecure === true);
    // The control plane's certificates first: the regenerated NATS config names them too.
    const control = await prepareControlCerts(inv, progressPrinter(argv));
    if (inv.certs !== null) certs = await prepareCerts(inv, hosts, progressPrinter(argv));
    if (certs && control.length > 0) certs = { ...certs, issued: [...control, ...certs.issued] };
    else
      progressPrinter(argv)(
        'local',
        '--insecure: agents get plain NATS and plain streams (anyone who reaches NATS may command them)',
      );
  }
  const ctx = deployContext(inv, hosts, {
    parallel: argv.parallel,
    progress: progressPrinter(argv),
    wait: argv.wait ?? true,
  });
  try {
    const { results, extra } = await body(ctx);
    const ok = results.every((r) => r.ok);
    const security = writesConfig ? { certs, insecure: certs === null } : {};
    if (argv.json) {
      process.stdout.write(
        JSON.stringify({ verb, ok, ...security, ...extra, results }, null, 2) + '\n',
      );
    } else {
      process.stdout.write(renderResults(verb, results) + '\n');
      if (certs) process.stdout.write(certsSummary(certs) + '\n');
      else if (writesConfig)
        process.stdout.write('insecure: plain NATS and streams (--insecure)\n');
    }
    if (!ok) throw new ShownFailure(`${verb}: a host failed`);
  } finally {
    await ctx.cluster.close();
  }
}

/** Where built bundles are kept: `--cache-dir`, else `$XDG_CACHE_HOME/drover` (bundle.ts). */
function cacheOf(argv: Globals): { cacheDir?: string } {
  return argv['cache-dir'] !== undefined ? { cacheDir: argv['cache-dir'] } : {};
}

function controlPlaneFailed(host: string): HostResult {
  return failedResult(
    host,
    new DeployError(
      { host, failure: DeployFailure.refused, step: 'install' },
      'not installed: the control plane (NATS, controller) failed first',
    ),
  );
}

async function bundleFor(
  argv: Globals & { bundle?: string | undefined; release?: string | undefined },
  progress: (h: string, m: string) => void,
): Promise<Bundle> {
  if (argv.bundle) return readBundle(argv.bundle);
  progress('local', 'building the agent bundle from this repository');
  return buildBundle({ ...cacheOf(argv), ...(argv.release ? { release: argv.release } : {}) });
}

function bundleInfo(b: Bundle): Record<string, unknown> {
  return { bundle: { path: b.path, sha256: b.sha256, size: b.size, ...b.manifest } };
}

const withHosts = <T>(y: Argv<T>) =>
  y.positional('hosts', {
    type: 'string',
    array: true,
    default: [] as string[],
    describe: 'hosts (default: all, or those with every --label)',
  });

const bundleOptions = <T>(y: Argv<T>) =>
  y
    .option('bundle', { type: 'string', describe: 'a bundle made by `drover-deploy bundle`' })
    .option('release', { type: 'string', describe: 'release label when building the bundle' })
    .option('insecure', {
      type: 'boolean',
      default: false,
      describe: 'deploy without certificates: plain NATS and streams (refused otherwise)',
    });

await runCli({
  name: 'drover-deploy',
  usage: '$0 <command> [hosts..] [options]',
  exitCodes,
  build: (y) =>
    y
      .option('inventory', {
        alias: 'i',
        type: 'string',
        default: process.env.DROVER_INVENTORY ?? 'drover-inventory.yaml',
        describe: 'the inventory (YAML)',
      })
      .option('certs', {
        type: 'string',
        describe: 'the certificates directory (`drover certs init`); overrides the inventory',
      })
      .option('json', { type: 'boolean', default: false, describe: 'print JSON' })
      .option('parallel', { type: 'number', default: 8, describe: 'hosts worked on at once' })
      .option('label', {
        type: 'string',
        array: true,
        default: [] as string[],
        describe: 'only hosts with this KEY=VALUE label',
      })
      .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'no progress' })
      .option('cache-dir', {
        type: 'string',
        describe:
          'where built bundles are kept (default: $XDG_CACHE_HOME/drover, else ~/.cache/drover)',
      })
      .command<HostArgs>(
        'check [hosts..]',
        'Can each host run an agent? (changes nothing)',
        withHosts,
        (argv) =>
          runVerb('check', argv, async (ctx) => {
            const [control, results, nats] = await Promise.all([
              checkControlPlane(ctx),
              check(ctx),
              // NATS the deployer runs may not be up yet: that is install's business.
              ctx.inv.nats.deploy ? Promise.resolve(null) : checkNats(ctx),
            ]);
            return { results: [...control, ...results], extra: { nats } };
          }),
      )
      .command<
        HostArgs & {
          bundle?: string;
          release?: string;
          force: boolean;
          wait: boolean;
          insecure: boolean;
        }
      >(
        'install [hosts..]',
        'Install and start the agent (idempotent)',
        (y) =>
          bundleOptions(withHosts(y))
            .option('force', {
              type: 'boolean',
              default: false,
              describe: 'restart an agent running another release in place (no drain)',
            })
            .option('wait', { type: 'boolean', default: true, describe: 'wait for heartbeats' }),
        (argv) =>
          runVerb(
            'install',
            argv,
            async (ctx) => {
              const b = await bundleFor(argv, ctx.progress);
              // The control plane first: agents need NATS and a controller to register with.
              const control = await installControlPlane(ctx, b, argv.force);
              const results = control.every((r) => r.ok)
                ? await install(ctx, b, argv.force)
                : ctx.hosts.map((h) => controlPlaneFailed(h.name));
              const all = [...control, ...results];
              const context =
                all.every((r) => r.ok) && ctx.inv.certs !== null
                  ? writeDeployContext(ctx.inv)
                  : null;
              if (context)
                ctx.progress(
                  'local',
                  `context ${context.name} written to ${context.file}` +
                    (context.current ? ' (current)' : `; \`drover context use ${context.name}\``),
                );
              return { results: all, extra: { ...bundleInfo(b), context } };
            },
            true,
          ),
      )
      .command<HostArgs>(
        'certs [hosts..]',
        'Issue missing agent certificates and regenerate the NATS security config (no host changes)',
        withHosts,
        async (argv) => {
          const inv = loadInventory(
            argv.inventory,
            argv.certs !== undefined ? { certs: argv.certs } : {},
          );
          requireSecurity(inv, false);
          const report = await prepareCerts(
            inv,
            selectHosts(inv, argv.hosts, argv.label),
            progressPrinter(argv),
          );
          process.stdout.write(
            argv.json
              ? JSON.stringify({ verb: 'certs', ok: true, certs: report }, null, 2) + '\n'
              : certsSummary(report) + '\n',
          );
        },
      )
      .command<HostArgs & { wait: boolean }>(
        'start [hosts..]',
        'Start the agent and wait for its heartbeat',
        (y) => withHosts(y).option('wait', { type: 'boolean', default: true }),
        (argv) => runVerb('start', argv, async (ctx) => ({ results: await start(ctx) })),
      )
      .command<HostArgs>(
        'stop [hosts..]',
        'Stop the agent (its jobs keep running)',
        withHosts,
        (argv) => runVerb('stop', argv, async (ctx) => ({ results: await stop(ctx) })),
      )
      .command<HostArgs>(
        'status [hosts..]',
        'The agent on each host, and the controller’s view',
        withHosts,
        (argv) =>
          runVerb('status', argv, async (ctx) => ({
            results: [...(await controlPlaneStatus(ctx)), ...(await status(ctx))],
          })),
      )
      .command<
        HostArgs & {
          bundle?: string;
          release?: string;
          drain: boolean;
          'drain-parallel': number;
          'drain-timeout': number;
          insecure: boolean;
        }
      >(
        'upgrade [hosts..]',
        'Rolling upgrade: drain, upgrade, start, uncordon, one host at a time',
        (y) =>
          bundleOptions(withHosts(y))
            .option('drain', { type: 'boolean', default: true, describe: 'drain each host first' })
            .option('drain-parallel', {
              type: 'number',
              default: 2,
              describe: 'migrations at once',
            })
            .option('drain-timeout', {
              type: 'number',
              default: 900,
              describe: 'seconds per drain',
            }),
        (argv) =>
          runVerb(
            'upgrade',
            argv,
            async (ctx) => {
              const b = await bundleFor(argv, ctx.progress);
              const results = await upgrade(ctx, b, {
                drain: argv.drain,
                drainParallel: argv['drain-parallel'],
                drainTimeoutMs: argv['drain-timeout'] * 1000,
                // NATS servers, then controllers, one at a time, before the agents' drains.
                beforeAgents: () => upgradeControlPlane(ctx, b),
              });
              return { results, extra: bundleInfo(b) };
            },
            true,
          ),
      )
      .command<HostArgs & { purge: boolean; drain: boolean; 'drain-timeout': number }>(
        'uninstall [hosts..]',
        'Stop and remove the agent and its files',
        (y) =>
          withHosts(y)
            .option('purge', {
              type: 'boolean',
              default: false,
              describe:
                'also remove the state directory (job records, images) and revoke the hosts’ certificates',
            })
            .option('drain', {
              type: 'boolean',
              default: false,
              describe: 'drain hosts that still run jobs first',
            })
            .option('drain-timeout', { type: 'number', default: 900 }),
        (argv) =>
          runVerb('uninstall', argv, async (ctx) => {
            // Control hosts keep their files until the control plane goes, last, with the
            // whole fleet (agents elsewhere still need it otherwise).
            const control = members(ctx.inv, ctx.hosts);
            const { results, revocation } = await uninstall(ctx, {
              purge: argv.purge,
              drain: argv.drain,
              drainTimeoutMs: argv['drain-timeout'] * 1000,
              keepFiles: new Set(control.map((m) => m.host.name)),
            });
            const revoked = revocation ? { revocation } : {};
            // Revoked users leave the NATS servers the deployer runs (they stay otherwise).
            const refreshed =
              (revocation?.revoked.length ?? 0) > 0 && !wholeFleet(ctx)
                ? await refreshNatsServers(ctx)
                : [];
            if (control.length === 0)
              return { results: [...results, ...refreshed], extra: revoked };
            if (!wholeFleet(ctx) || !results.every((r) => r.ok))
              return {
                results: [...results, ...refreshed],
                extra: {
                  ...revoked,
                  controlPlane: 'kept: it goes with the whole fleet, once every agent is gone',
                },
              };
            return {
              results: [...results, ...(await uninstallControlPlane(ctx, argv.purge))],
              extra: revoked,
            };
          }),
      )
      .command<Globals & { release?: string; out?: string }>(
        'bundle',
        'Build the agent bundle (a tarball install and upgrade can take with --bundle)',
        (y) =>
          y
            .option('release', { type: 'string', describe: 'release label (default: the version)' })
            .option('out', {
              type: 'string',
              describe: 'directory for the tarball (default: <cache-dir>/bundles)',
            }),
        async (argv) => {
          const b = await buildBundle({
            ...cacheOf(argv),
            ...(argv.release ? { release: argv.release } : {}),
            ...(argv.out ? { outDir: argv.out } : {}),
          });
          process.stdout.write(
            argv.json
              ? JSON.stringify(bundleInfo(b).bundle, null, 2) + '\n'
              : `${b.path}\nrelease ${b.manifest.release} id ${b.manifest.id}, ${b.manifest.files} files, ` +
                  `${(b.size / 1048576).toFixed(1)} MiB\n`,
          );
        },
      )
      .command<Globals & { addresses: string[] }>(
        'keyscan <addresses..>',
        'Print the host keys of ADDRESS[:PORT]s, to pin after checking them out of band',
        (y) => y.positional('addresses', { type: 'string', array: true, demandOption: true }),
        async (argv) => {
          const rows = await Promise.all(
            argv.addresses.map(async (a) => {
              const m = /^(.+?)(?::(\d+))?$/.exec(a);
              const target = {
                address: m?.[1] ?? a,
                port: Number(m?.[2] ?? 22),
                connectTimeoutMs: 10_000,
              };
              try {
                const k = await scanHostKey(target);
                return { address: a, ok: true, ...k, valid: parseHostKey(k.line) !== null };
              } catch (err) {
                return {
                  address: a,
                  ok: false,
                  error: err instanceof Error ? err.message : String(err),
                };
              }
            }),
          );
          if (argv.json) process.stdout.write(JSON.stringify({ keys: rows }, null, 2) + '\n');
          else
            process.stdout.write(
              table(
                ['ADDRESS', 'FINGERPRINT', 'HOSTKEY'],
                rows.map((r) =>
                  r.ok && 'line' in r
                    ? [r.address, r.fingerprint, r.line]
                    : [r.address, '-', `unreachable: ${'error' in r ? r.error : ''}`],
                ),
              ) + '\n',
            );
          if (rows.some((r) => !r.ok)) throw new ShownFailure('an address did not answer');
        },
      ),
});
