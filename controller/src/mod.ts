/** @drover/controller: the controller daemon (placement, host registry, operations) and the `drover` CLI. */
export { place, planMany, occupyingJobs, formatBytes } from './placement.js';
export type { HostView, PlacementRequest, PlanRequest, Verdict, Placement } from './placement.js';
export { HostRegistry } from './host-registry.js';
export type { HostRegistryOptions, HostRegistryJSON } from './host-registry.js';
export { Controller } from './controller.js';
export type { ControllerStores } from './controller.js';
export { startController } from './daemon.js';
export type { ControllerDaemon } from './daemon.js';
export {
  compileControllerConfig,
  controllerConfigFromEnv,
  controllerConfigFromFile,
} from './config.js';
export type { ControllerConfig, ControllerConfigInput } from './config.js';
