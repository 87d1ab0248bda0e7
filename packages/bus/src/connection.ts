/** The one place that connects to NATS: servers, TLS, credentials; publish, subscribe, request. */
import { readFile } from 'node:fs/promises';
import { connect } from '@nats-io/transport-node';
import {
  credsAuthenticator,
  errors as natsErrors,
  type NatsConnection,
  type Subscription,
} from '@nats-io/nats-core';
import { DroverError, ErrorCode, nullLogger, type Logger } from '@drover/common';
import { decodeReply } from '@drover/protocol';

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
  /** Default request timeout. */
  requestTimeoutMs?: number;
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

/** A NATS connection with Drover's conventions (JSON payloads, typed errors). */
export class Bus {
  private readonly subs: Subscription[] = [];

  private constructor(
    /** The underlying connection, for the JetStream layers built on this package. */
    readonly nc: NatsConnection,
    private readonly requestTimeoutMs: number,
    private readonly log: Logger,
  ) {}

  /** Connect; throws UNAVAILABLE (retryable) when no server answers. */
  static async connect(options: BusOptions): Promise<Bus> {
    const log = (options.logger ?? nullLogger).child({ component: 'bus' });
    const authenticator = options.credsFile
      ? credsAuthenticator(await readFile(options.credsFile))
      : undefined;
    try {
      const nc = await connect({
        servers: [...options.servers],
        name: options.name,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        ...(options.tls ? { tls: { ...options.tls } } : {}),
        ...(options.user !== undefined ? { user: options.user } : {}),
        ...(options.pass !== undefined ? { pass: options.pass } : {}),
        ...(options.token !== undefined ? { token: options.token } : {}),
        ...(authenticator ? { authenticator } : {}),
      });
      const bus = new Bus(nc, options.requestTimeoutMs ?? 10_000, log);
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

  /** Serve every message on `subject` (wildcards allowed); replies with what `handler` returns. */
  serve(subject: string, handler: RawHandler, options: { queue?: string } = {}): void {
    const sub = this.nc.subscribe(subject, options.queue ? { queue: options.queue } : {});
    this.subs.push(sub);
    void (async () => {
      for await (const msg of sub) {
        // Each request runs on its own; a slow one does not hold up the rest.
        void handler(msg.subject, msg.data).then(
          (reply) => {
            if (msg.reply) msg.respond(reply);
          },
          (err: unknown) => this.log.error('handler threw past its own error mapping', { err }),
        );
      }
    })();
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
    })();
    return () => sub.unsubscribe();
  }

  /** Publish a JSON value. */
  publish(subject: string, value: unknown): void {
    this.nc.publish(subject, JSON.stringify(value));
  }

  /** Request/reply with Drover's envelope: the result, or the remote failure as a typed error. */
  async request(subject: string, payload: unknown, timeoutMs?: number): Promise<unknown> {
    const body = payload instanceof Uint8Array ? payload : JSON.stringify(payload ?? {});
    let msg;
    try {
      msg = await this.nc.request(subject, body, { timeout: timeoutMs ?? this.requestTimeoutMs });
    } catch (err) {
      throw mapRequestError(subject, err);
    }
    return decodeReply(msg.data);
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
          data: String((s as { error?: unknown }).error ?? ''),
        });
      }
    }
  }
}

function mapRequestError(subject: string, err: unknown): DroverError {
  if (err instanceof natsErrors.NoRespondersError || /no responders/i.test(String(err))) {
    return new DroverError(ErrorCode.Unavailable, `nobody serves ${subject}`, {
      retryable: true,
      cause: err,
      details: { subject },
    });
  }
  if (err instanceof natsErrors.TimeoutError || /timeout/i.test(String(err))) {
    return new DroverError(ErrorCode.Timeout, `no reply on ${subject} in time`, {
      retryable: true,
      cause: err,
      details: { subject },
    });
  }
  if (err instanceof natsErrors.PermissionViolationError) {
    return new DroverError(ErrorCode.FailedPrecondition, `permission denied for ${subject}`, {
      cause: err,
      details: { subject },
    });
  }
  return new DroverError(ErrorCode.Unavailable, `request on ${subject} failed: ${String(err)}`, {
    retryable: true,
    cause: err,
  });
}
