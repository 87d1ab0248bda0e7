/** The host registry owns what the controller knows of each host: its last heartbeat, whether it is reachable, and its cordon. */
import { DroverError, ErrorCode } from '@drover/common';
import {
  arr,
  bool,
  int,
  json,
  num,
  obj,
  objWith,
  str,
  type AgentInfo,
  type Infer,
} from '@drover/protocol';
import type { HostView } from './placement.js';

/** Options of a HostRegistry. */
export interface HostRegistryOptions {
  /** A host whose last heartbeat is older than this is marked unreachable by `sweep`. */
  unreachableAfterMs: number;
  /** Clock in ms; default `Date.now`. Persisted `lastSeenMs` values are in this clock. */
  now?: () => number;
}

/** The registry as persisted (`toJSON`, `fromJSON`). */
export interface HostRegistryJSON {
  version: 1;
  hosts: HostView[];
}

/**
 * Hosts as the controller sees them, fed by heartbeats: a pure state machine (no timers, no I/O;
 * the caller calls `observe` per heartbeat and `sweep` on its own schedule). Views it returns are
 * frozen snapshots; `info` is the heartbeat object as given.
 */
export class HostRegistry {
  readonly #hosts = new Map<string, Readonly<HostView>>();
  readonly #unreachableAfterMs: number;
  readonly #now: () => number;

  constructor(opts: HostRegistryOptions) {
    if (!Number.isFinite(opts.unreachableAfterMs) || opts.unreachableAfterMs <= 0) {
      throw new DroverError(
        ErrorCode.InvalidArgument,
        `unreachableAfterMs must be a positive number, got ${String(opts.unreachableAfterMs)}`,
      );
    }
    this.#unreachableAfterMs = opts.unreachableAfterMs;
    this.#now = opts.now ?? Date.now;
  }

  /** A heartbeat: a new host appears, a known one is refreshed, an unreachable one comes back. */
  observe(info: AgentInfo): HostView {
    if (typeof info.host !== 'string' || info.host === '') {
      throw new DroverError(ErrorCode.InvalidArgument, 'heartbeat without a host name');
    }
    const prev = this.#hosts.get(info.host);
    return this.#set({
      host: info.host,
      info,
      cordoned: prev?.cordoned ?? false,
      reachable: true,
      lastSeenMs: this.#now(),
    });
  }

  /** Keep new jobs off a host (placement refuses it); survives heartbeats. */
  cordon(host: string): HostView {
    return this.#set({ ...this.#known(host), cordoned: true });
  }

  /** Let placement choose a host again. */
  uncordon(host: string): HostView {
    return this.#set({ ...this.#known(host), cordoned: false });
  }

  /** Reachable hosts silent for longer than the timeout: to be asked directly before `sweep`. */
  silent(): string[] {
    const now = this.#now();
    return this.list()
      .filter((v) => v.reachable && now - v.lastSeenMs > this.#unreachableAfterMs)
      .map((v) => v.host);
  }

  /**
   * A direct answer from a host's agent (a liveness probe): it counts as seen now, with the
   * uptime it gave (so a restart still shows), its last heartbeat's facts otherwise kept.
   */
  vouch(host: string, answer: { uptimeSec: number; loop?: AgentInfo['loop'] }): HostView {
    const v = this.#known(host);
    return this.#set({
      ...v,
      info: {
        ...v.info,
        uptimeSec: answer.uptimeSec,
        ...(answer.loop ? { loop: answer.loop } : {}),
      },
      reachable: true,
      lastSeenMs: this.#now(),
    });
  }

  /** Mark hosts silent for longer than the timeout unreachable; returns the newly unreachable, by name. */
  sweep(): string[] {
    const now = this.#now();
    const lost: string[] = [];
    for (const v of this.#hosts.values()) {
      if (v.reachable && now - v.lastSeenMs > this.#unreachableAfterMs) {
        this.#set({ ...v, reachable: false });
        lost.push(v.host);
      }
    }
    return lost.sort();
  }

  /** Forget a host (it left the cluster); true when it was known. */
  remove(host: string): boolean {
    return this.#hosts.delete(host);
  }

  /** One host, if it has ever sent a heartbeat. */
  get(host: string): HostView | undefined {
    return this.#hosts.get(host);
  }

  /** Every known host, sorted by name. */
  list(): HostView[] {
    return [...this.#hosts.values()].sort((a, b) =>
      a.host < b.host ? -1 : a.host > b.host ? 1 : 0,
    );
  }

  /** The registry as plain JSON, for the controller's key-value store. */
  toJSON(): HostRegistryJSON {
    return { version: 1, hosts: this.list().map((v) => ({ ...v })) };
  }

  /**
   * Rebuild a registry persisted by `toJSON`.
   * @throws DroverError INVALID_ARGUMENT if `data` is not such a document.
   */
  static fromJSON(data: unknown, opts: HostRegistryOptions): HostRegistry {
    const reg = new HostRegistry(opts);
    const bad = (why: string): DroverError =>
      new DroverError(ErrorCode.InvalidArgument, `host registry document: ${why}`);
    let doc: Infer<typeof PersistedRegistry>;
    try {
      doc = PersistedRegistry.parse(data);
    } catch (err) {
      throw bad((err as Error).message);
    }
    doc.hosts.forEach((h, i) => {
      if (h.info.host !== h.host) throw bad(`hosts[${i}].info: must be the heartbeat of that host`);
      const v = h as unknown as HostView;
      if (reg.#hosts.has(v.host)) throw bad(`hosts[${i}]: ${v.host} is listed twice`);
      reg.#set({
        host: v.host,
        info: v.info,
        cordoned: v.cordoned,
        reachable: v.reachable,
        lastSeenMs: v.lastSeenMs,
      });
    });
    return reg;
  }

  #known(host: string): Readonly<HostView> {
    const v = this.#hosts.get(host);
    if (v === undefined) {
      throw new DroverError(ErrorCode.NotFound, `unknown host ${host} (no heartbeat seen)`, {
        details: { host },
      });
    }
    return v;
  }

  #set(view: HostView): HostView {
    const frozen = Object.freeze(view);
    this.#hosts.set(view.host, frozen);
    return frozen;
  }
}

/**
 * A persisted HostView: the fields placement reads are checked (the heartbeat's other fields
 * pass through as they were stored).
 */
const PersistedHostView = obj({
  host: str({ min: 1 }),
  info: objWith({
    host: str({ min: 1 }),
    memory: objWith({ availableBytes: num() }),
    cpuFlags: arr(str(), { max: 4096 }),
    criu: objWith({ lazyPages: bool() }),
    jobs: arr(json(), { max: Number.MAX_SAFE_INTEGER }),
  }),
  cordoned: bool(),
  reachable: bool(),
  lastSeenMs: num(),
});

/** The registry as persisted by `toJSON`. */
const PersistedRegistry = obj({
  version: int({ min: 1, max: 1 }),
  hosts: arr(PersistedHostView, { max: Number.MAX_SAFE_INTEGER }),
});
