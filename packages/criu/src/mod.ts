/** @drover/criu: the only package that speaks to CRIU (provisioning check, RPC engine, errors). */
export { Criu, findPageServer, logTail } from './criu.js';
export type {
  CriuFeatures,
  CriuOptions,
  CriuVersion,
  CallOptions,
  DumpResult,
  RestoreResult,
  PageServerHandle,
} from './criu.js';
export type {
  DumpOptions,
  RestoreOptions,
  PageServerOptions,
  ImagesOptions,
  CriuLogLevel,
  CriuTls,
} from './options.js';
export { readDumpStats, writeDumpStats, pageBytes, PAGE_SIZE } from './image-stats.js';
export type { DumpStats } from './image-stats.js';
export { CriuError, CriuNotProvisionedError } from './errors.js';
export type { CriuErrorFields } from './errors.js';
export { findCriu, compareVersions, parseCriuVersion, MIN_CRIU_VERSION } from './provision.js';
export type { CriuBinary } from './provision.js';
export { SwrkSession, NotifyScript } from './swrk.js';
export type { CriuHooks, SwrkOptions } from './swrk.js';
export { WarmSwrk } from './warm-swrk.js';
export type { WarmProcess, WarmSwrkOptions } from './warm-swrk.js';
export { CgroupMode, NetworkLock, compileRpcCodecs } from './rpc-schema.js';
export { startLazyPages } from './lazy-pages.js';
export type { LazyPagesDaemon, LazyPagesOptions } from './lazy-pages.js';
export { probeAbilities, buildLibrariesOf, CRIU_FEATURES } from './abilities.js';
export type { CriuAbilities } from './abilities.js';
