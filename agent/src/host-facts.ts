/** What an agent reports about its host: capacity, kernel, CRIU abilities, CPU flags, jobs. */
import { readFile } from 'node:fs/promises';
import { availableParallelism, release, totalmem } from 'node:os';
import type { AgentInfo } from '@drover/protocol';
import type { CriuFeatures } from '@drover/criu';
import type { JobRecord } from './job-store.js';
import { cpuFlags } from './preflight.js';

/** The package version reported in heartbeats. */
export const AGENT_VERSION = '0.1.0';

let flagsCache: Promise<string[]> | null = null;

/** MemAvailable from /proc/meminfo, in bytes. */
export async function availableMemory(): Promise<number> {
  const text = await readFile('/proc/meminfo', 'utf8');
  const kb = Number(/^MemAvailable:\s+(\d+) kB/m.exec(text)?.[1] ?? 0);
  return kb * 1024;
}

/** Build the heartbeat / `info` reply. */
export async function buildAgentInfo(
  agent: {
    config: { hostId: string };
    criuVersion: string;
    features: CriuFeatures;
    startedAt: number;
    stream: { host: string; port: number };
  },
  jobs: readonly JobRecord[],
): Promise<AgentInfo> {
  flagsCache ??= cpuFlags();
  return {
    host: agent.config.hostId,
    version: AGENT_VERSION,
    time: new Date().toISOString(),
    uptimeSec: Math.round((Date.now() - agent.startedAt) / 1000),
    kernel: release(),
    cpus: availableParallelism(),
    cpuFlags: await flagsCache,
    memory: { totalBytes: totalmem(), availableBytes: await availableMemory() },
    criu: {
      version: agent.criuVersion,
      lazyPages: agent.features.lazyPages,
      memTrack: agent.features.memTrack,
    },
    stream: { ...agent.stream },
    jobs: jobs.map((j) => ({ id: j.id, state: j.state, name: j.name })),
  };
}
