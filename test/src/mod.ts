/** @drover/test: the testbed, the self-checking workloads and the agent cluster harness. */
export * from './testbed/mod.js';
export * from './workloads/mod.js';
export {
  AgentCluster,
  AgentHandle,
  AGENT_MAIN,
  AGENT_STATE_DIR,
  REPO_ROOT,
} from './cluster/agents.js';
