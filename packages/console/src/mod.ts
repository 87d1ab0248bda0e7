/** @drover/console: the web console (`drover console`): its server, the cluster's live picture, the page. */
export { CONSOLE_ACTIONS, startConsole } from './server.js';
export type { ConsoleOptions, RunningConsole } from './server.js';
export { ClusterView } from './cluster-view.js';
export type { ConsoleEvent, ConsoleSnapshot } from './cluster-view.js';
