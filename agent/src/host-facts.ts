/** What an agent reports about its host: capacity, kernel, CRIU abilities, CPU flags, jobs. */
import { readFile, stat, statfs } from 'node:fs/promises';
import { availableParallelism, release, totalmem } from 'node:os';
import type { AgentInfo, AgentReplies, AgentRequest } from '@drover/protocol';
import type { CriuAbilities, CriuFeatures } from '@drover/criu';
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
    abilities: CriuAbilities | null;
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
      ...(agent.abilities ? { abilities: agent.abilities } : {}),
    },
    stream: { ...agent.stream },
    jobs: jobs.map((j) => ({ id: j.id, state: j.state, name: j.name })),
  };
}

/** Which of `req.files` are missing or of another size here, and (if asked) the free space. */
export async function checkFiles(
  req: AgentRequest<'files-check'>,
  stateDir: string,
): Promise<AgentReplies['files-check']> {
  const missing: string[] = [];
  const sizeDiffers: { path: string; expected: number; actual: number }[] = [];
  for (const f of req.files) {
    try {
      const st = await stat(f.path);
      if (f.size !== undefined && st.size !== f.size)
        sizeDiffers.push({ path: f.path, expected: f.size, actual: st.size });
    } catch {
      missing.push(f.path);
    }
  }
  if (req.space !== true) return { missing, sizeDiffers };
  const fs = await statfs(stateDir);
  return { missing, sizeDiffers, freeBytes: fs.bavail * fs.bsize };
}
