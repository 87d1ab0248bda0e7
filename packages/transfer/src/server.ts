/**
 * StreamServer: the destination agent's listener. With TLS it admits only clients whose
 * certificate (signed by the CA) names a Drover agent; it authenticates each connection's HELLO
 * against one-time expectations (migration id + token, and with TLS the source agent's identity)
 * and hands accepted streams to their handler as a `StreamReceiver`, which answers the sender
 * with RESULT or ERROR.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import net, { type AddressInfo, type Socket } from 'node:net';
import tls from 'node:tls';
import { DroverError, ErrorCode, nullLogger, toDroverError, type Logger } from '@drover/common';
import { identityOfSubject, type Identity } from '@drover/protocol';
import { FrameChannel, asStreamError } from './channel.js';
import { TransferError } from './errors.js';
import { MAX_FRAME_PAYLOAD } from './frame.js';
import {
  TRANSFER_PROTOCOL_VERSION,
  helloSchema,
  parseJsonFrame,
  protocolError,
} from './messages.js';

/** Default time a new connection has to present a valid HELLO (and finish TLS). */
export const DEFAULT_HELLO_TIMEOUT_MS = 5000;
/** Default interval of keepalive PINGs while the receiver works before answering. */
export const DEFAULT_KEEPALIVE_MS = 2000;
/** Largest frame accepted before authentication (a HELLO is tiny). */
const PRE_AUTH_MAX_PAYLOAD = 16 * 1024;
/** How long writing RESULT may wait for the sender to read. */
const RESULT_STALL_MS = 10_000;

/**
 * Server-side TLS: mutual authentication against `ca` is always required, and the client's
 * certificate must name a Drover agent (`O=drover, OU=agent, CN=<host>`).
 */
export interface ServerTlsOptions {
  key: string | Buffer;
  cert: string | Buffer;
  /** CA(s) that sign sender (client) certificates. */
  ca: string | Buffer | Array<string | Buffer>;
  /** Always true; present for readability at call sites. */
  requestCert?: true;
  /** The CA's revocation list (PEM): a client whose certificate it lists is refused. */
  crl?: string | Buffer;
}

/** Options of `StreamServer.listen`. */
export interface StreamServerOptions {
  host: string;
  /** 0 picks a free port; read it back with `address()`. */
  port: number;
  /** Serve TLS with mutual authentication instead of plain TCP. */
  tls?: ServerTlsOptions;
  logger?: Logger;
  /** Drop connections without a valid HELLO after this long. Default 5 s. */
  helloTimeoutMs?: number;
}

/** Called once with the accepted stream of an expected migration. */
export type ReceiverHandler = (receiver: StreamReceiver) => Promise<void> | void;

interface Expectation {
  digest: Buffer;
  handler: ReceiverHandler;
  /** With TLS: the agent (certificate CN) that alone may send this stream. */
  peer: string | null;
}

/** Options of `StreamServer.expect`. */
export interface ExpectOptions {
  /**
   * The host id of the only agent that may send this stream: on a TLS server its certificate
   * must name `agent <peer>`. (A plain TCP server has no identities and ignores it.)
   */
  peer?: string;
}

/** The role a client certificate must name on a TLS stream server. */
export const STREAM_PEER_ROLE = 'agent';

/**
 * The accepted, authenticated stream of one migration on the destination agent. Feed it to
 * `receiveFiles`, then answer with exactly one `sendResult` or `sendError` (wrap long work
 * in `keepAlive` so the sender's idle timeout does not fire).
 */
export class StreamReceiver {
  private replied = false;

  /** @internal */
  constructor(
    /** @internal The frame channel; used by `receiveFiles`. */
    readonly channel: FrameChannel,
    readonly migrationId: string,
  ) {}

  /** `host:port` of the sender. */
  get peer(): string {
    return this.channel.peer;
  }

  /** True once a RESULT or ERROR went out, or the stream failed. */
  get answered(): boolean {
    return this.replied || this.channel.failure !== null;
  }

  /**
   * Send RESULT (any JSON value, ≤ 4 MiB encoded) and close the stream gracefully. Never rejects,
   * so it is safe to call without `await`: resolves true once RESULT was handed to the socket,
   * false if the stream had already failed or been answered, or if RESULT could not be sent (an
   * unencodable or oversize result is turned into an ERROR for the sender). False means the
   * sender may not learn the outcome from this stream.
   */
  async sendResult(result: unknown): Promise<boolean> {
    if (this.answered) return false;
    this.replied = true;
    try {
      await this.channel.sendJson('RESULT', result ?? null, RESULT_STALL_MS);
    } catch (err) {
      this.channel.fail(asStreamError(err), true);
      return false;
    }
    this.channel.close();
    return true;
  }

  /**
   * Send `err` as an ERROR frame and close; resolves when the socket has closed (at most
   * `LINGER_MS` later). Never rejects. A no-op if the stream already failed (the first error wins).
   */
  async sendError(err: unknown): Promise<void> {
    this.replied = true;
    this.channel.fail(toDroverError(err), true);
    await this.channel.closed;
  }

  /** Send PING every `intervalMs` until `work` settles; returns `work`'s outcome. */
  keepAlive<T>(work: Promise<T>, intervalMs = DEFAULT_KEEPALIVE_MS): Promise<T> {
    return this.channel.pingWhile(work, intervalMs, () => this.answered);
  }

  /** Drop the stream at once. */
  destroy(): void {
    this.channel.destroy();
  }
}

/** The destination agent's transfer listener. */
export class StreamServer {
  private readonly expectations = new Map<string, Expectation>();
  private readonly channels = new Set<FrameChannel>();

  private constructor(
    private readonly server: net.Server,
    private readonly logger: Logger,
    private readonly helloTimeoutMs: number,
    private readonly secure: boolean,
    private readonly tls: ServerTlsOptions | undefined,
  ) {}

  /** Listen on `host:port` (TCP or mutual TLS); resolves once listening. */
  static async listen(options: StreamServerOptions): Promise<StreamServer> {
    const logger = (options.logger ?? nullLogger).child({ component: 'transfer' });
    const helloTimeoutMs = options.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS;
    // `self` is assigned below, before the server can accept (listen has not been called yet).
    const onSocket = (socket: Socket): void => self.onConnection(socket);
    let server: net.Server;
    if (options.tls) {
      const t = options.tls;
      const tlsServer = tls.createServer(
        {
          ...secureContextOf(t),
          requestCert: true,
          rejectUnauthorized: true,
          handshakeTimeout: helloTimeoutMs,
        },
        onSocket,
      );
      tlsServer.on('tlsClientError', (err, socket) => {
        logger.warn('TLS handshake refused', { peer: socket.remoteAddress, err });
      });
      server = tlsServer;
    } else {
      server = net.createServer(onSocket);
    }
    const self = new StreamServer(
      server,
      logger,
      helloTimeoutMs,
      options.tls !== undefined,
      options.tls,
    );
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port, options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => logger.error('listener error', { err }));
    logger.info('listening', { ...self.address(), tls: options.tls !== undefined });
    return self;
  }

  /**
   * Check clients against a new revocation list from now on (null: none); connections already
   * accepted are not affected. Throws FAILED_PRECONDITION on a server without TLS.
   */
  setCrl(crl: string | Buffer | null): void {
    if (!this.tls) {
      throw new DroverError(ErrorCode.FailedPrecondition, 'a stream server without TLS has no CRL');
    }
    const { crl: _old, ...rest } = this.tls;
    (this.server as tls.Server).setSecureContext(
      secureContextOf(crl === null ? rest : { ...rest, crl }),
    );
  }

  /** The bound address (the real port when listening on 0). */
  address(): { host: string; port: number } {
    const a = this.server.address() as AddressInfo;
    return { host: a.address, port: a.port };
  }

  /**
   * Expect one stream for `migrationId`: the first connection whose HELLO carries it with
   * `token` (and, with TLS, whose certificate names `agent <options.peer>`) gets ACCEPT and is
   * handed to `handler`; the expectation is then gone, so the token cannot be reused. A wrong
   * token or peer does not consume it. Throws ALREADY_EXISTS if one is pending.
   */
  expect(
    migrationId: string,
    token: string,
    handler: ReceiverHandler,
    options: ExpectOptions = {},
  ): void {
    if (this.expectations.has(migrationId)) {
      throw new DroverError(
        ErrorCode.AlreadyExists,
        `transfer for ${migrationId} already expected`,
      );
    }
    this.expectations.set(migrationId, {
      digest: digest(token),
      handler,
      peer: options.peer ?? null,
    });
  }

  /** Withdraw a pending expectation; true if there was one. */
  cancel(migrationId: string): boolean {
    return this.expectations.delete(migrationId);
  }

  /** Stop listening, drop every pending expectation and destroy every open stream. */
  async close(): Promise<void> {
    this.expectations.clear();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const channel of this.channels) channel.destroy();
    await Promise.all([closed, ...[...this.channels].map((c) => c.closed)]);
  }

  private onConnection(socket: Socket): void {
    const channel = new FrameChannel(socket, this.logger, { maxPayload: PRE_AUTH_MAX_PAYLOAD });
    this.channels.add(channel);
    void channel.closed.then(() => this.channels.delete(channel));
    let peer: Identity | null = null;
    if (this.secure) {
      // Signed by the CA is not enough: only an agent may send images, checked before HELLO.
      peer = peerIdentity(socket as tls.TLSSocket);
      if (peer?.role !== STREAM_PEER_ROLE) {
        const err = new TransferError(
          `transfer refused: the client certificate is not a Drover agent's (${peer ? `${peer.role} ${peer.name}` : 'not a Drover identity'})`,
          { kind: 'auth', frame: null, offset: 0 },
        );
        this.logger.warn('transfer connection refused', { peer: channel.peer, err });
        channel.fail(err, true);
        return;
      }
    }
    this.handshake(channel, peer).catch((err: unknown) => {
      const winner = channel.fail(toDroverError(err), true);
      this.logger.warn('transfer connection refused', { peer: channel.peer, err: winner });
    });
  }

  /** Authenticate; why nothing is read past HELLO until the token matched: see `expect`. */
  private async handshake(channel: FrameChannel, peer: Identity | null): Promise<void> {
    const frame = await channel.next(this.helloTimeoutMs, 'HELLO');
    if (frame.type !== 'HELLO') throw protocolError(frame, 'expected HELLO');
    const hello = parseJsonFrame(frame, helloSchema);
    if (hello.version !== TRANSFER_PROTOCOL_VERSION) {
      throw protocolError(frame, `unsupported protocol version ${hello.version}`);
    }
    const expected = this.expectations.get(hello.migrationId);
    const tokenOk = expected !== undefined && timingSafeEqual(expected.digest, digest(hello.token));
    // With TLS the certificate must be the source agent's the migration was prepared for.
    const peerOk =
      expected !== undefined && (expected.peer === null || !peer || peer.name === expected.peer);
    if (!expected || !tokenOk || !peerOk) {
      this.logger.warn('transfer refused: unknown migration, wrong token or wrong agent', {
        migrationId: hello.migrationId,
        known: expected !== undefined,
        tokenOk,
        agent: peer?.name ?? null,
        peer: channel.peer,
      });
      throw new TransferError(
        `transfer for ${hello.migrationId} refused: not expected, wrong or used token, or not the source agent`,
        { kind: 'auth', frame: 'HELLO', offset: frame.offset },
      );
    }
    this.expectations.delete(hello.migrationId);
    channel.decoder.maxPayload = MAX_FRAME_PAYLOAD;
    await channel.sendJson('ACCEPT', {}, this.helloTimeoutMs);
    this.logger.info('transfer accepted', { migrationId: hello.migrationId, peer: channel.peer });
    const receiver = new StreamReceiver(channel, hello.migrationId);
    try {
      await expected.handler(receiver);
      if (!receiver.answered) {
        await receiver.sendError(
          new DroverError(ErrorCode.Internal, 'transfer handler returned without a result'),
        );
      }
    } catch (err) {
      this.logger.warn('transfer handler failed', { migrationId: hello.migrationId, err });
      await receiver.sendError(err);
    }
  }
}

/** The identity the client certificate of a TLS connection names (null: none of ours). */
function peerIdentity(socket: tls.TLSSocket): Identity | null {
  const cert = socket.getPeerX509Certificate();
  return cert ? identityOfSubject(cert.subject) : null;
}

/** sha256 of a token: equal-length inputs for timingSafeEqual whatever the token lengths. */
function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** The secure context of a stream server's TLS options. */
function secureContextOf(t: ServerTlsOptions): tls.SecureContextOptions {
  return {
    key: t.key,
    cert: t.cert,
    ca: t.ca,
    minVersion: 'TLSv1.2',
    ...(t.crl !== undefined ? { crl: t.crl } : {}),
  };
}
