/**
 * Requests that survive a lost NATS connection: request ids, acknowledgements, re-sends, and
 * the servers' cache of calls by id.
 *
 * Every request carries an id. A server runs a new id once, acknowledges every copy of it at
 * once, and answers a repeated id from the call already running (or from its kept reply)
 * instead of running it again. So a client may re-send freely:
 * - after its own reconnect (a reply sent to it meanwhile is gone);
 * - while nobody serves the subject, for a short grace (the server is reconnecting; a
 *   no-responders answer proves nobody received the request);
 * - once acknowledged, every `probeMs` (a request or reply lost with the server's NATS server);
 * - unacknowledged, every `probeMs` too: a subscription whose client vanished (a cut link) stays
 *   on its NATS server until pings time it out, and swallows what it gets without a word.
 * A re-send after an acknowledgement is marked: a server that does not know its id (it restarted
 * since) answers "outcome unknown" rather than running the request a second time.
 */
import { performance } from 'node:perf_hooks';
import {
  createInbox,
  headers,
  nuid,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
} from '@nats-io/nats-core';
import { DroverError, ErrorCode } from '@drover/common';
import { failReply, MAX_MESSAGE_BYTES } from '@drover/protocol';

/** The request id header (set by clients on every request). */
export const REQUEST_ID_HEADER = 'Drover-Request-Id';
/** Set on a re-send after the server acknowledged the request. */
export const ACKED_HEADER = 'Drover-Acked';
/** Set by servers on the immediate acknowledgement (empty body). */
export const ACK_HEADER = 'Drover-Ack';

/** What a request needs from the connection. */
export interface RequestLink {
  readonly nc: NatsConnection;
  /** Publish (held back and sent after a reconnect while the connection is down). */
  publishRaw(
    subject: string,
    data: Uint8Array,
    options?: { reply?: string; headers?: MsgHdrs },
  ): void;
  /** Call `fn` after each reconnect; returns the function that stops it. */
  onReconnect(fn: () => void): () => void;
  /** Where replies arrive (default `_INBOX`): NATS permissions may allow no other. */
  readonly inboxPrefix?: string;
  /** Call `fn` when NATS refuses a publish (permissions); returns the function that stops it. */
  onPublishDenied?(fn: (subject: string, message: string) => void): () => void;
}

/** How long and how often a request tries. */
export interface ResendPolicy {
  timeoutMs: number;
  /** Keep re-sending this long while nobody serves the subject. */
  noRespondersGraceMs: number;
  /** Once acknowledged, re-send this often until the reply comes. */
  probeMs: number;
}

/** Longest request id a server accepts (clients send 22-character nuids). */
export const MAX_REQUEST_ID = 128;

/** Pause between re-sends while nobody serves the subject. */
const NO_RESPONDERS_RETRY_MS = 250;

/** Send `body` to `subject` and resolve with the reply bytes; TIMEOUT or UNAVAILABLE otherwise. */
export function requestWithResend(
  link: RequestLink,
  subject: string,
  body: Uint8Array,
  policy: ResendPolicy,
): Promise<Uint8Array> {
  const id = nuid.next();
  const inbox = createInbox(link.inboxPrefix);
  let acked = false;
  let noRespondersSince: number | null = null;
  const send = (): void => {
    if (link.nc.isClosed()) return;
    const h = headers();
    h.set(REQUEST_ID_HEADER, id);
    if (acked) h.set(ACKED_HEADER, '1');
    try {
      link.publishRaw(subject, body, { reply: inbox, headers: h });
    } catch {
      // closed or draining: the deadline reports it
    }
  };
  return new Promise<Uint8Array>((resolve, reject) => {
    let retry: NodeJS.Timeout | undefined;
    let settled = false;
    const finish = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      clearInterval(probe);
      clearTimeout(retry);
      stopReconnect();
      stopDenied();
      sub.unsubscribe();
      outcome();
    };
    const sub = link.nc.subscribe(inbox, {
      callback: (err, msg) => {
        if (err)
          return finish(() =>
            reject(
              /permissions violation/i.test(String(err))
                ? denied(inbox, String(err), err)
                : unavailable(subject, String(err), err),
            ),
          );
        if (msg.data.length === 0 && msg.headers?.code === 503) {
          // Nobody serves the subject right now: nobody got this copy.
          const now = performance.now();
          noRespondersSince ??= now;
          if (now - noRespondersSince >= policy.noRespondersGraceMs)
            return finish(() => reject(nobodyServes(subject, acked)));
          clearTimeout(retry);
          retry = setTimeout(send, NO_RESPONDERS_RETRY_MS);
          return;
        }
        noRespondersSince = null;
        if (msg.headers?.has(ACK_HEADER)) {
          acked = true;
          return;
        }
        finish(() => resolve(msg.data));
      },
    });
    const deadline = setTimeout(
      () =>
        finish(() =>
          reject(
            noRespondersSince !== null
              ? nobodyServes(subject, acked)
              : new DroverError(ErrorCode.Timeout, `no reply on ${subject} in time`, {
                  retryable: true,
                  details: { subject, timeoutMs: policy.timeoutMs },
                }),
          ),
        ),
      policy.timeoutMs,
    );
    const probe = setInterval(() => {
      // While nobody serves the subject, the no-responders retries re-send.
      if (noRespondersSince === null) send();
    }, policy.probeMs);
    const stopReconnect = link.onReconnect(send);
    // A refused publish is reported only asynchronously: end the request with it at once.
    const stopDenied =
      link.onPublishDenied?.((s, message) => {
        if (s === subject) finish(() => reject(denied(subject, message)));
      }) ?? ((): void => {});
    send();
  });
}

function unavailable(subject: string, why: string, cause?: unknown): DroverError {
  return new DroverError(ErrorCode.Unavailable, `request on ${subject} failed: ${why}`, {
    retryable: true,
    cause,
    details: { subject },
  });
}

function denied(subject: string, why: string, cause?: unknown): DroverError {
  return new DroverError(
    ErrorCode.PermissionDenied,
    `not permitted: NATS refused ${subject} for this client's certificate (${why})`,
    { cause, details: { subject } },
  );
}

function nobodyServes(subject: string, acked: boolean): DroverError {
  return acked
    ? new DroverError(
        ErrorCode.Unavailable,
        `the server of ${subject} went away while handling the request; its outcome is unknown`,
        { details: { subject, outcomeUnknown: true } },
      )
    : new DroverError(ErrorCode.Unavailable, `nobody serves ${subject}`, {
        retryable: true,
        details: { subject },
      });
}

interface Call {
  reply: Promise<Uint8Array | null>;
  done: boolean;
  size: number;
}

/**
 * A server's calls by request id: each id runs once; every copy of it is acknowledged and
 * answered from the same call. Finished calls are kept `keepMs` for late re-sends, and at most
 * `maxKeptBytes` of their replies (the oldest go first).
 */
export class CallCache {
  private readonly calls = new Map<string, Call>();
  private readonly finished = new Map<string, Call>();
  private keptBytes = 0;

  constructor(
    private readonly link: RequestLink,
    private readonly keepMs = 120_000,
    private readonly maxKeptBytes = 32 * 1024 * 1024,
  ) {}

  /** Calls running or kept right now. */
  get size(): number {
    return this.calls.size;
  }

  /**
   * Serve one message: `run` computes the reply (null: send none). Messages without a request
   * id or reply subject are plain requests: run and answered once.
   */
  handle(msg: Msg, run: () => Promise<Uint8Array | null>): void {
    const id = msg.headers?.get(REQUEST_ID_HEADER) ?? '';
    const subject = msg.subject;
    const fitted = (): Promise<Uint8Array | null> =>
      run().then((r) => (r ? this.fit(subject, r) : r));
    if (id === '' || !msg.reply) {
      void fitted().then((r) => {
        if (r && msg.reply) this.answer(msg.reply, r);
      });
      return;
    }
    const reply = msg.reply;
    if (id.length > MAX_REQUEST_ID) {
      // Ids are kept for minutes: an unbounded one would let a sender fill our memory.
      this.answer(
        reply,
        failReply(
          new DroverError(ErrorCode.InvalidArgument, `request id longer than ${MAX_REQUEST_ID}`, {
            details: { subject: msg.subject },
          }),
        ),
      );
      return;
    }
    let call = this.calls.get(id);
    if (call === undefined) {
      if (msg.headers?.has(ACKED_HEADER)) {
        // Acknowledged by a server before us: it may have run. Never run it a second time.
        this.link.publishRaw(reply, outcomeUnknown(msg.subject));
        return;
      }
      call = this.start(id, fitted);
    }
    if (!call.done) {
      const h = headers();
      h.set(ACK_HEADER, '1');
      this.link.publishRaw(reply, new Uint8Array(0), { headers: h });
    }
    void call.reply.then((r) => {
      if (r) this.answer(reply, r);
    });
  }

  /** Publish a reply; one NATS refuses (too large) is answered with a typed failure instead. */
  private answer(reply: string, data: Uint8Array): void {
    try {
      this.link.publishRaw(reply, data);
    } catch (err) {
      try {
        this.link.publishRaw(
          reply,
          failReply(
            new DroverError(ErrorCode.Internal, 'the reply could not be sent', {
              details: { size: data.byteLength },
              cause: err,
            }),
          ),
        );
      } catch {
        // the connection is closed: nobody can be answered
      }
    }
  }

  /**
   * A reply the server would refuse (over its payload limit, or over the envelope's limit that
   * every client enforces) becomes a failure saying so: publishing it would throw, and the
   * thrown error would end the serving process.
   */
  private fit(subject: string, reply: Uint8Array): Uint8Array {
    const limit = Math.min(this.link.nc.info?.max_payload ?? MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES);
    if (reply.byteLength <= limit) return reply;
    return failReply(
      new DroverError(
        ErrorCode.FailedPrecondition,
        `the reply on ${subject} is ${reply.byteLength} bytes, over the ${limit}-byte message limit`,
        { details: { subject, size: reply.byteLength, limit } },
      ),
    );
  }

  private start(id: string, run: () => Promise<Uint8Array | null>): Call {
    const call: Call = { reply: run(), done: false, size: 0 };
    this.calls.set(id, call);
    void call.reply.then((r) => {
      call.done = true;
      call.size = r?.byteLength ?? 0;
      this.finished.set(id, call);
      this.keptBytes += call.size;
      setTimeout(() => this.forget(id), this.keepMs).unref();
      for (const [old] of this.finished) {
        if (this.keptBytes <= this.maxKeptBytes) break;
        this.forget(old);
      }
    });
    return call;
  }

  private forget(id: string): void {
    const call = this.finished.get(id);
    if (call === undefined) return;
    this.finished.delete(id);
    this.calls.delete(id);
    this.keptBytes -= call.size;
  }
}

function outcomeUnknown(subject: string): Uint8Array {
  return failReply(
    new DroverError(
      ErrorCode.Unavailable,
      `the server of ${subject} restarted while handling the request; its outcome is unknown`,
      { details: { subject, outcomeUnknown: true } },
    ),
  );
}
