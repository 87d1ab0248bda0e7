/** The one place that connects to NATS: servers, TLS, credentials; publish, subscribe, request. */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { connect } from '@nats-io/transport-node';
import {
  credsAuthenticator,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from '@nats-io/nats-core';
import { DroverError, ErrorCode, nullLogger, type Logger } from '@drover/common';
import {
  arr,
  decodeReply,
  either,
  identityOfSubject,
  inboxPrefixOf,
  obj,
  opt,
  str,
  type Identity,
} from '@drover/protocol';
import { CallCache, requestWithResend, type RequestLink } from './request.js';

/** How to reach NATS. TLS and credentials are accepted from the start. */
export interface BusOptions {
  servers: readonly string[];
  /** Connection name shown by the server (e.g. `agent h1`). */
  name: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  user?: string;
  pass?: string;
  token?: string;
  /** A NATS `.creds` file (JWT + nkey seed). */
  credsFile?: string;
  /**
   * Where replies to this client arrive. Default: the inbox of the identity named by the TLS
   * client certificate (`_INBOX.<role>.<name>`, the only inbox NATS lets it subscribe to), else
   * `_INBOX`.
   */
  inboxPrefix?: string;
  /** Default request timeout. */
  requestTimeoutMs?: number;
  /**
   * How long a request keeps re-sending while nobody serves its subject (a server reconnecting
   * after its NATS server died). Default 3000 ms.
   */
  noRespondersGraceMs?: number;
  /** Once a server acknowledged a request, re-send it this often until the reply comes. Default 5000 ms. */
  probeMs?: number;
  logger?: Logger;
}

/** NATS settings as apps configure them (servers, TLS files, credentials). */
export interface NatsSettings {
  readonly servers: readonly string[];
  readonly tls?: {
    readonly caFile?: string;
    readonly certFile?: string;
    readonly keyFile?: string;
  };
  readonly user?: string;
  readonly pass?: string;
  readonly token?: string;
  readonly credsFile?: string;
}

/**
 * {@link NatsSettings} as an app's config layer (a file, the environment) gives them: every field
 * optional (the layers merge), `servers` a list or one comma-separated string.
 */
export const NatsSettingsInput = obj({
  servers: opt(either(arr(str()), str())),
  tls: opt(obj({ caFile: opt(str()), certFile: opt(str()), keyFile: opt(str()) })),
  user: opt(str()),
  pass: opt(str()),
  token: opt(str()),
  credsFile: opt(str()),
});

/** BusOptions from an app's NATS settings (only the fields that are set). */
export function busOptionsFrom(nats: NatsSettings, name: string, logger?: Logger): BusOptions {
  return {
    servers: nats.servers,
    name,
    ...(logger ? { logger } : {}),
    ...(nats.tls ? { tls: { ...nats.tls } } : {}),
    ...(nats.user !== undefined ? { user: nats.user } : {}),
    ...(nats.pass !== undefined ? { pass: nats.pass } : {}),
    ...(nats.token !== undefined ? { token: nats.token } : {}),
    ...(nats.credsFile !== undefined ? { credsFile: nats.credsFile } : {}),
  };
}

/** A message handler for `serve`: gets the subject and payload, returns the reply bytes. */
export type RawHandler = (subject: string, data: Uint8Array) => Promise<Uint8Array>;

/** Messages held while disconnected, at most (older ones are dropped first). */
const MAX_HELD = 10_000;

/**
 * A NATS connection with Drover's conventions (JSON payloads, typed errors) that rides over a
 * lost server: it reconnects to any of its servers forever, holds what is published while
 * disconnected (nats.js drops it) and sends it after the reconnect, and makes requests that
 * survive the loss (see request.ts).
 */
export class Bus implements RequestLink {
  private readonly subs: Subscription[] = [];
  private down = false;
  private held: { subject: string; data: Uint8Array; options?: PublishOptions }[] = [];
  private readonly reconnectListeners = new Set<() => void>();
  private readonly deniedListeners = new Set<(subject: string, message: string) => void>();
  private readonly calls: CallCache;

  private constructor(
    /** The underlying connection, for the JetStream layers built on this package. */
    readonly nc: NatsConnection,
    /** Where replies to this client's requests arrive. */
    readonly inboxPrefix: string,
    /** Who this client is: the identity its TLS certificate names (null without one). */
    readonly identity: Identity | null,
    private readonly options: {
      requestTimeoutMs: number;
      noRespondersGraceMs: number;
      probeMs: number;
    },
    private readonly log: Logger,
  ) {
    this.calls = new CallCache(this);
  }

  /** Connect; throws UNAVAILABLE (retryable) when no server answers. */
  static async connect(options: BusOptions): Promise<Bus> {
    const log = (options.logger ?? nullLogger).child({ component: 'bus' });
    const authenticator = options.credsFile
      ? credsAuthenticator(await readFile(options.credsFile))
      : undefined;
    const identity = await certificateIdentity(options.tls?.certFile);
    const inboxPrefix = options.inboxPrefix ?? (identity ? inboxPrefixOf(identity) : '_INBOX');
    try {
      const nc = await connect({
        servers: [...options.servers],
        name: options.name,
        // Reconnect forever, to any listed server (the order is shuffled, so clients spread).
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        // A crashed server closes its sockets and is noticed at once; one that vanished (a host
        // gone, a cut link) only by missed pings: ~15 s with these, 4 min with nats.js's defaults.
        pingInterval: 5000,
        maxPingOut: 3,
        ...(options.tls ? { tls: { ...options.tls } } : {}),
        ...(options.user !== undefined ? { user: options.user } : {}),
        ...(options.pass !== undefined ? { pass: options.pass } : {}),
        ...(options.token !== undefined ? { token: options.token } : {}),
        ...(authenticator ? { authenticator } : {}),
        inboxPrefix,
      });
      const bus = new Bus(
        nc,
        inboxPrefix,
        identity,
        {
          requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
          noRespondersGraceMs: options.noRespondersGraceMs ?? 3000,
          probeMs: options.probeMs ?? 5000,
        },
        log,
      );
      void bus.watchStatus();
      return bus;
    } catch (err) {
      throw new DroverError(
        ErrorCode.Unavailable,
        `cannot connect to NATS at ${options.servers.join(', ')}: ${(err as Error).message}`,
        { retryable: true, cause: err },
      );
    }
  }

  /**
   * Serve every message on `subject` (wildcards allowed); replies with what `handler` returns.
   * A request re-sent with the same id runs once (see request.ts). No queue groups: re-sends
   * must reach the server that acknowledged them.
   */
  serve(subject: string, handler: RawHandler): void {
    const sub = this.nc.subscribe(subject);
    this.subs.push(sub);
    void (async () => {
      for await (const msg of sub) {
        // Each request runs on its own; a slow one does not hold up the rest.
        this.calls.handle(msg, () =>
          handler(msg.subject, msg.data).catch((err: unknown) => {
            this.log.error('handler threw past its own error mapping', { err });
            return null;
          }),
        );
      }
    })().catch((err: unknown) => this.log.error('cannot serve', { subject, err }));
  }

  /** Subscribe with a callback per message (JSON-decoded; undecodable ones are logged). */
  subscribe(subject: string, onMessage: (subject: string, value: unknown) => void): () => void {
    const sub = this.nc.subscribe(subject);
    this.subs.push(sub);
    void (async () => {
      for await (const msg of sub) {
        try {
          onMessage(msg.subject, JSON.parse(new TextDecoder().decode(msg.data)));
        } catch (err) {
          this.log.warn('undecodable message', { subject: msg.subject, err });
        }
      }
    })().catch((err: unknown) => this.log.error('subscription refused', { subject, err }));
    return () => sub.unsubscribe();
  }

  /** Publish a JSON value (held and sent after a reconnect while disconnected). */
  publish(subject: string, value: unknown): void {
    this.publishRaw(subject, new TextEncoder().encode(JSON.stringify(value)));
  }

  /** Publish bytes now, or after the reconnect while the connection is down. */
  publishRaw(subject: string, data: Uint8Array, options?: PublishOptions): void {
    if (this.down) {
      if (this.held.length >= MAX_HELD) this.held.shift();
      this.held.push({ subject, data, ...(options ? { options } : {}) });
      return;
    }
    this.nc.publish(subject, data, options);
  }

  /** Call `fn` when NATS refuses a publish of this client (its permissions do not allow it). */
  onPublishDenied(fn: (subject: string, message: string) => void): () => void {
    this.deniedListeners.add(fn);
    return () => this.deniedListeners.delete(fn);
  }

  /** Call `fn` after each reconnect (subscriptions and held messages are sent by then). */
  onReconnect(fn: () => void): () => void {
    this.reconnectListeners.add(fn);
    return () => this.reconnectListeners.delete(fn);
  }

  /**
   * Request/reply with Drover's envelope: the result, or the remote failure as a typed error.
   * Safe to use for any operation: re-sends never run it twice on the same server (request.ts).
   */
  async request(subject: string, payload: unknown, timeoutMs?: number): Promise<unknown> {
    const body =
      payload instanceof Uint8Array
        ? payload
        : new TextEncoder().encode(JSON.stringify(payload ?? {}));
    const timeout = timeoutMs ?? this.options.requestTimeoutMs;
    const reply = await requestWithResend(this, subject, body, {
      timeoutMs: timeout,
      noRespondersGraceMs: Math.min(this.options.noRespondersGraceMs, timeout),
      probeMs: this.options.probeMs,
    });
    return decodeReply(reply);
  }

  /** Flush pending publishes to the server. */
  async flush(): Promise<void> {
    await this.nc.flush();
  }

  /** Drain subscriptions and close. */
  async close(): Promise<void> {
    if (this.nc.isClosed()) return;
    await this.nc.drain().catch(() => this.nc.close());
  }

  private async watchStatus(): Promise<void> {
    for await (const s of this.nc.status()) {
      // Denied publishes only show up here (NATS reports them asynchronously).
      if (s.type === 'error' || s.type === 'disconnect' || s.type === 'reconnect') {
        this.log.warn('nats status', {
          type: s.type,
          data: String(
            (s as { error?: unknown }).error ?? (s as { server?: unknown }).server ?? '',
          ),
        });
      }
      const denied = (s as { error?: { name?: string; operation?: string; subject?: string } })
        .error;
      if (denied?.name === 'PermissionViolationError' && denied.operation === 'publish') {
        for (const fn of [...this.deniedListeners]) fn(denied.subject ?? '', String(denied));
      }
      if (s.type === 'disconnect') this.down = true;
      if (s.type === 'reconnect') {
        this.down = false;
        const held = this.held;
        this.held = [];
        for (const m of held) this.nc.publish(m.subject, m.data, m.options);
        for (const fn of [...this.reconnectListeners]) fn();
      }
    }
  }
}

/** The Drover identity a client certificate names, if it names one. */
async function certificateIdentity(certFile: string | undefined): Promise<Identity | null> {
  if (certFile === undefined) return null;
  try {
    return identityOfSubject(new X509Certificate(await readFile(certFile)).subject);
  } catch (err) {
    throw new DroverError(
      ErrorCode.InvalidArgument,
      `cannot read the TLS certificate ${certFile}: ${(err as Error).message}`,
      { cause: err, details: { certFile } },
    );
  }
}

/** Options of a raw publish. */
export interface PublishOptions {
  reply?: string;
  headers?: MsgHdrs;
}
