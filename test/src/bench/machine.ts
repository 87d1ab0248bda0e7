/** Which machine a bench ran on, and how busy it was: printed with every result. */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';

/** Facts of the machine a bench ran on. */
export interface MachineFacts {
  cpuModel: string;
  cpus: number;
  memoryGiB: number;
  kernel: string;
  os: string;
  node: string;
  criu: string;
  natsServer: string;
  /** 1-minute load average when read. */
  load1: number;
  /** drover-agent and nats-server processes not started by this run (other suites running). */
  foreignProcesses: number;
}

function version(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
      .trim()
      .split('\n')[0]!;
  } catch {
    return 'not found';
  }
}

function osName(): string {
  try {
    return (
      /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? 'unknown'
    );
  } catch {
    return 'unknown';
  }
}

/** Agents and NATS servers running now whose environment does not carry `ownRunIds`. */
export function foreignProcesses(ownRunIds: readonly string[] = []): number {
  let n = 0;
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8');
      if (!/agent\/dist\/main\.js|nats-server/.test(cmd)) continue;
      const env = readFileSync(`/proc/${e}/environ`, 'utf8');
      if (ownRunIds.some((id) => env.includes(`DROVER_TESTBED_RUN=${id}`))) continue;
      n++;
    } catch {
      // gone, or not ours to read
    }
  }
  return n;
}

/** Read the facts now. */
export function machineFacts(): MachineFacts {
  return {
    cpuModel: cpus()[0]?.model ?? 'unknown',
    cpus: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    os: osName(),
    node: process.version,
    criu: version('criu', ['--version']).replace(/^Version:\s*/, ''),
    natsServer: version('nats-server', ['--version']),
    load1: Math.round(loadavg()[0]! * 100) / 100,
    foreignProcesses: foreignProcesses(),
  };
}

/** One line describing the machine, for the table's header. */
export function describeMachine(m: MachineFacts): string {
  return (
    `${m.cpuModel}, ${m.cpus} CPUs, ${m.memoryGiB} GiB, ${m.os}, kernel ${m.kernel}, ` +
    `Node ${m.node}, CRIU ${m.criu}, ${m.natsServer}; load ${m.load1}, ` +
    `${m.foreignProcesses} other agents/NATS servers running`
  );
}
