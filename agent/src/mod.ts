/** @drover/agent: the per-host daemon (jobs, supervision, checkpoint/restore, its NATS API). */
export { Agent } from './agent.js';
export { blankRecord, LIVE_STATES } from './job-store.js';
export { startAgentDaemon } from './daemon.js';
export type { AgentDaemon } from './daemon.js';
export { compileAgentConfig, configFromArgs, configFromEnv, configFromFile } from './config.js';
export type { AgentConfig, AgentConfigInput } from './config.js';
export { openFile, rebindFile, sealFile, sealImage } from './image-crypto.js';
export { SCRATCH_TMPFS_OPTION } from './migration/scratch.js';
