/** @drover/common: errors, the Logger interface, ids, event-loop lag, retrying and bounded concurrency. No I/O. */
export { ErrorCode, DroverError, errorToJson, isDroverError, toDroverError } from './errors.js';
export type { DroverErrorOptions, ErrorJson } from './errors.js';
export { LogLevel, nullLogger, jsonLogger } from './logger.js';
export type { Logger, LogFields } from './logger.js';
export { newId, newSecret } from './ids.js';
export { eventLoopLag, watchEventLoopLag } from './loop-lag.js';
export type { EventLoopLag } from './loop-lag.js';
export { retry, backoff, sleep } from './retry.js';
export type { RetryOptions } from './retry.js';
export { forEachLimit, mapLimit, runGroups, settleAll } from './pool.js';
export {
  checkContext,
  CONTEXT_NAME_PATTERN,
  contextsPath,
  findContext,
  formatContexts,
  NO_CONTEXTS,
  parseContexts,
  removeContext,
  upsertContext,
  useContext,
} from './cluster-contexts.js';
export type { ClusterContext, ContextsFile } from './cluster-contexts.js';
