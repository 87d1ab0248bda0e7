/**
 * The dump phase of a source migration, one function per way the memory leaves: stop-copy
 * streams the pages to the destination's page server while CRIU dumps; post-copy keeps them here
 * for the destination to pull once the job runs there. Either way the tree stays frozen.
 */
import { DroverError, ErrorCode } from '@drover/common';
import type { DumpOptions, SwrkSession } from '@drover/criu';
import type { ConnectionRef } from './page-channel.js';
import type { SourceWorld } from './source-world.js';

/**
 * A post-copy dump leaves memory out of the images; more than this much page data in them means
 * lazy pages did not take, and the move is refused rather than silently copying everything.
 */
const LAZY_LEFTOVER_BYTES = 32 * 1024 * 1024;

/** What both dumps share: the tree, the scratch directory, the job's files at post-dump. */
export interface DumpInput {
  base: DumpOptions;
  hooks: { 'post-dump': () => Promise<number> };
  scratch: string;
  /** A CRIU started before the freeze to dump in (the dump's from then on), or a fresh one. */
  session: SwrkSession | null;
}

/**
 * post-copy: CRIU writes everything but the memory, says status-ready, then serves pages on
 * `port` until the destination has them all; the DUMP reply comes only after that. `onStarted`
 * gets that whole dump at once (the pull phase waits for it; the rollback stops it). Resolves
 * once the images are ready, checked to hold no memory.
 */
export async function dumpLazy(
  w: SourceWorld,
  input: DumpInput,
  o: {
    port: number;
    onStarted: (dump: Promise<unknown>) => void;
    onSession: (sw: SwrkSession) => void;
    /** CRIU said status-ready: the images are written. */
    onReady?: () => void;
  },
): Promise<void> {
  let ready!: () => void;
  const imagesReady = new Promise<void>((r) => (ready = r));
  const tls = w.pageTls('server');
  const lazyDump = w.dump(
    {
      ...input.base,
      lazyPages: true,
      pageServer: { address: w.advertiseHost, port: o.port },
      ...(tls ? { tls } : {}),
    },
    {
      hooks: { ...input.hooks, 'status-ready': () => ready() },
      onSession: o.onSession,
      session: input.session,
    },
  );
  lazyDump.catch(() => undefined);
  o.onStarted(lazyDump);
  await Promise.race([
    imagesReady.then(() => o.onReady?.()),
    lazyDump.then(() => {
      throw new DroverError(ErrorCode.Internal, 'lazy dump ended before it was ready');
    }),
  ]);
  // The memory must have stayed out of the images, or post-copy silently became a copy.
  const left = await w.images.pageBytes(input.scratch);
  if (left > LAZY_LEFTOVER_BYTES) {
    throw new DroverError(
      ErrorCode.FailedPrecondition,
      `the post-copy dump wrote ${Math.round(left / 1048576)} MiB of pages into its images: lazy pages did not take`,
      { details: { pageBytes: left } },
    );
  }
}

/**
 * stop-copy: the pages go to the destination's page server while CRIU dumps: they never touch
 * this host's memory again, nor the agents. A peer that stops taking them gets the connection
 * cut, and CRIU unwinds by itself (the tree is released as it was). Resolves to the number of
 * pages written.
 */
export async function dumpToPageServer(
  w: SourceWorld,
  input: DumpInput,
  o: {
    pages: { host: string; port: number };
    onAcked: (bytes: number) => void;
  },
): Promise<number> {
  const tls = w.pageTls('client');
  const dumping = w.dump(
    {
      ...input.base,
      pageServer: { address: o.pages.host, port: o.pages.port },
      ...(tls ? { tls } : {}),
    },
    { hooks: input.hooks, session: input.session },
  );
  await watched(w, { peer: o.pages.host, peerPort: o.pages.port }, dumping, o.onAcked);
  return (await w.images.stats(input.scratch)).pagesWritten;
}

/**
 * post-copy, the job running on the destination: resolves once it has pulled every page (our
 * lazy dump ends then). A destination that stops pulling gets the connection cut.
 */
export function pagesPulled(
  w: SourceWorld,
  lazyDump: Promise<unknown>,
  c: { peer: string; localPort: number },
): Promise<void> {
  return watched(w, c, lazyDump);
}

/** Wait for `until` with the page connection `c` watched: a stalled peer's cut is the error. */
async function watched(
  w: SourceWorld,
  c: ConnectionRef,
  until: Promise<unknown>,
  onAcked?: (bytes: number) => void,
): Promise<void> {
  let cutWhy: string | null = null;
  const onCut = (why: string): void => void (cutWhy = why);
  if (onAcked) w.pages.watch(c, until, onCut, onAcked);
  else w.pages.watch(c, until, onCut);
  await until.catch((err: unknown) => {
    throw cutWhy === null
      ? err
      : new DroverError(ErrorCode.Unavailable, cutWhy, { cause: err, retryable: true });
  });
}
