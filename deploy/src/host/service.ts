#!/usr/bin/env node
/**
 * The host side of the deployer, shipped in every release as `bin/drover-service.js` and run
 * with the host's node: start, stop and report the agent (through systemd where the host runs
 * it, else as a supervised background service), list the jobs still alive, and the supervisor
 * loop itself. Every verb prints one JSON line on stdout. This file is the command line; the
 * rest is beside it: service-spec.ts (the spec, PID record and layout under the install root),
 * proc.ts (PIDs checked through /proc), service-control.ts (status, start, stop, live jobs) and
 * supervisor.ts (the supervisor loop).
 *
 * Self-contained on purpose: it must work from a bare release directory, so these modules import
 * node: modules, each other and `@drover/native/procfs` (pure node:fs) only, and the bundle
 * (bundle.ts) makes them one file.
 *
 * The supervisor keeps `<root>/run/supervisor.json` with its own and the agent's PID and start
 * time; `stop` signals a PID only after checking that it is still the same process.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { liveJobs, start, status, stop } from './service-control.js';
import { SERVICE_NAMES, type ServiceName } from './service-spec.js';
import { supervise } from './supervisor.js';

export { procStat, sameProcess } from './proc.js';
export { liveJobs, start, status, stop } from './service-control.js';
export {
  Layout,
  layoutOf,
  RELEASE_DIR,
  SERVICE_NAMES,
  type PidRecord,
  type ServiceName,
  type ServiceSpec,
  type ServiceStatus,
} from './service-spec.js';
export { supervise } from './supervisor.js';

function arg(argv: readonly string[], name: string): string {
  const i = argv.indexOf(name);
  const v = i >= 0 ? argv[i + 1] : undefined;
  if (!v) throw new Error(`${name} is required`);
  return v;
}

/** The `--name` of a verb (default `agent`), checked. */
function nameArg(argv: readonly string[]): ServiceName {
  if (!argv.includes('--name')) return 'agent';
  const n = arg(argv, '--name');
  if (!(SERVICE_NAMES as readonly string[]).includes(n))
    throw new Error(`unknown service ${n}; use ${SERVICE_NAMES.join(', ')}`);
  return n as ServiceName;
}

/**
 * `drover-service.js <status|start|stop|run|jobs> --root DIR [--name agent|nats|controller]
 * | --state-dir DIR`.
 */
export async function main(argv: readonly string[]): Promise<void> {
  const verb = argv[0];
  const self = fileURLToPath(import.meta.url);
  const print = (v: unknown): void => void process.stdout.write(JSON.stringify(v) + '\n');
  switch (verb) {
    case 'status':
      return print(status(arg(argv, '--root'), nameArg(argv)));
    case 'start':
      return print(await start(arg(argv, '--root'), self, nameArg(argv)));
    case 'stop':
      return print(await stop(arg(argv, '--root'), nameArg(argv)));
    case 'jobs':
      return print({ jobs: liveJobs(arg(argv, '--state-dir')) });
    case 'run':
      return supervise(arg(argv, '--root'), nameArg(argv));
    default:
      throw new Error(`unknown verb ${verb ?? '(none)'}; use status, start, stop, jobs or run`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`drover-service: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
