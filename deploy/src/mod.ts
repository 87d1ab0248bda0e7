/** @drover/deploy: the SSH deployer's engine (the `drover-deploy` bin is main.ts). */
export { DeployError, DeployFailure } from './errors.js';
export type { DeployErrorInfo } from './errors.js';
export {
  loadInventory,
  compileInventory,
  selectHosts,
  parseHostKey,
  fingerprintOf,
  ServiceMode,
  SetupMode,
} from './inventory.js';
export type {
  Inventory,
  HostEntry,
  NatsInventory,
  ControllerInventory,
  AgentSettings,
  PinnedHostKey,
  TlsFiles,
  InventoryOverrides,
} from './inventory.js';
export { buildBundle, readBundle, BundlePaths, REPO_ROOT } from './bundle.js';
export type { Bundle, BundleManifest, BuildOptions } from './bundle.js';
export { SshSession, scanHostKey, shellQuote } from './ssh.js';
export type { RemoteResult, RunOptions } from './ssh.js';
export { HostOps, judgeFacts, parseFacts, UNIT_NAME, UNIT_PATH, REMOTE_PATH } from './remote.js';
export type { HostFacts, Verdict, DesiredFile } from './remote.js';
export { agentFiles, hostFiles, serviceSpec, systemdUnit, etcPaths } from './host-files.js';
export { ClusterLink } from './cluster.js';
export {
  agentCertFiles,
  agentSans,
  certsSummary,
  deployerTls,
  prepareCerts,
  requireSecurity,
} from './agent-certs.js';
export type { CertsReport } from './agent-certs.js';
export { forEachHost, withHost, failedResult } from './fleet.js';
export type { HostResult, HostOutcome, Progress } from './fleet.js';
export { deployContext } from './commands/context.js';
export type { DeployContext } from './commands/context.js';
export { check } from './commands/check.js';
export { install, installHost, startAndWait } from './commands/install.js';
export { start, stop, status } from './commands/service.js';
export { upgrade } from './commands/upgrade.js';
export type { UpgradeOptions } from './commands/upgrade.js';
export { uninstall } from './commands/uninstall.js';
export type { UninstallOptions } from './commands/uninstall.js';
export { renderResults, table } from './report.js';
export type { ServiceSpec, ServiceStatus, PidRecord } from './host/service.js';
