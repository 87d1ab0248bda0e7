/** The cluster event log: one JetStream stream over `drover.evt.>`, appended with acks, read by range. */
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { nanos, nuid } from '@nats-io/nats-core';
import { DroverError, ErrorCode } from '@drover/common';
import { EVENT_STREAM, EVENT_SUBJECT_PREFIX } from '@drover/protocol';
import type { Bus } from './connection.js';
import { CREATE_RACE_CODES, retryUnavailable } from './state-store.js';

/** How to open (or create) the event log. Limits apply only when the stream is created. */
export interface EventLogOptions {
  /** Stream name. Default `DROVER_EVENTS`. */
  stream?: string;
  /** Subjects it captures: everything under this prefix. Default `drover.evt.`. */
  subjectPrefix?: string;
  /** 1 for a single server, 3 for a 3-node cluster. Default 1. */
  replicas?: 1 | 3;
  /** Drop events older than this. Default 7 days. */
  maxAgeMs?: number;
  /** Drop the oldest events past this size. Default 1 GiB. */
  maxBytes?: number;
  /** JetStream API timeout. Default 2000 ms. */
  timeoutMs?: number;
  /** How long a call keeps retrying while JetStream is UNAVAILABLE. Default 30000 ms. */
  retryForMs?: number;
}

/** What to read. */
export interface ReadOptions {
  /** A subject filter under the log's prefix (wildcards allowed). Default all events. */
  subjectFilter?: string;
  /** Only events with a sequence greater than this (pass the last one you saw). Default 0. */
  sinceSeq?: number;
  /** At most this many events. */
  limit: number;
}

/** One event as stored. */
export interface LoggedEvent<T = unknown> {
  /** Stream sequence: increasing, unique, with gaps where events aged out or were filtered. */
  seq: number;
  subject: string;
  /** When the server stored it. */
  time: Date;
  value: T;
}

/** Matches subjects (or, with wildcards, filters) under `prefix`. */
function subjectPattern(prefix: string, wildcards: boolean): RegExp {
  const base = prefix.replace(/\.$/, '').replace(/\./g, '\\.');
  return new RegExp(`^${base}(\\.(${wildcards ? '[-\\w]+|\\*|>' : '[-\\w]+'}))+$`);
}

/** An append-only log of cluster events in one JetStream stream. */
export class EventLog {
  private constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    /** The stream name. */
    readonly stream: string,
    private readonly timeoutMs: number,
    private readonly retryForMs: number,
    /** The subjects it captures (under this prefix). */
    readonly subjectPrefix: string,
  ) {
    this.subjectRe = subjectPattern(subjectPrefix, false);
    this.filterRe = subjectPattern(subjectPrefix, true);
  }

  private readonly subjectRe: RegExp;
  private readonly filterRe: RegExp;

  /** Open the stream, creating it if missing. UNAVAILABLE (retryable) when JetStream does not answer. */
  static async open(bus: Bus, options: EventLogOptions = {}): Promise<EventLog> {
    const stream = options.stream ?? EVENT_STREAM;
    const prefix = options.subjectPrefix ?? EVENT_SUBJECT_PREFIX;
    const timeout = options.timeoutMs ?? 2000;
    const retryForMs = options.retryForMs ?? 30_000;
    const jsm = await retryUnavailable(
      `cannot open event log ${stream}`,
      retryForMs,
      async () => {
        const jsm = await jetstreamManager(bus.nc, { timeout });
        try {
          await jsm.streams.info(stream);
        } catch (err) {
          if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound))
            throw err;
          await jsm.streams
            .add({
              name: stream,
              subjects: [`${prefix}>`],
              retention: RetentionPolicy.Limits,
              storage: StorageType.File,
              num_replicas: options.replicas ?? 1,
              max_age: nanos(options.maxAgeMs ?? 7 * 24 * 3600 * 1000),
              max_bytes: options.maxBytes ?? 1024 ** 3,
            })
            .catch(async (e: unknown) => {
              // Another process created it at the same moment: it exists now.
              if (!(e instanceof JetStreamApiError && CREATE_RACE_CODES.includes(e.code))) throw e;
              await jsm.streams.info(stream);
            });
        }
        return jsm;
      },
      { stream },
    );
    return new EventLog(jetstream(bus.nc, { timeout }), jsm, stream, timeout, retryForMs, prefix);
  }

  /** Append a JSON event on `subject` (under `drover.evt.`) and wait for the ack. Returns its seq. */
  async append(subject: string, value: unknown): Promise<number> {
    if (!this.subjectRe.test(subject)) {
      throw new DroverError(
        ErrorCode.InvalidArgument,
        `event subject must be under ${this.subjectPrefix}`,
        {
          details: { subject },
        },
      );
    }
    // One message id for every try: the stream drops a retried copy of an append that landed.
    const msgID = nuid.next();
    const data = JSON.stringify(value);
    return retryUnavailable(
      `append to ${subject}`,
      this.retryForMs,
      async () => (await this.js.publish(subject, data, { msgID })).seq,
      { subject },
    );
  }

  /**
   * Events after `sinceSeq` matching `subjectFilter`, oldest first, at most `limit`.
   * Reads through a short-lived ephemeral pull consumer (works on 2.9.10; batch direct get
   * needs 2.11), so it sees exactly what was stored when the read started.
   */
  async read<T = unknown>(options: ReadOptions): Promise<LoggedEvent<T>[]> {
    const filter = options.subjectFilter ?? `${this.subjectPrefix}>`;
    const sinceSeq = options.sinceSeq ?? 0;
    if (
      !this.filterRe.test(filter) ||
      !Number.isSafeInteger(sinceSeq) ||
      sinceSeq < 0 ||
      !(options.limit > 0)
    ) {
      throw new DroverError(ErrorCode.InvalidArgument, 'bad event log read', {
        details: { subjectFilter: filter, sinceSeq, limit: options.limit },
      });
    }
    return retryUnavailable(
      `read ${filter} from ${this.stream}`,
      this.retryForMs,
      () => this.readOnce<T>(filter, sinceSeq, options.limit),
      { stream: this.stream, filter },
    );
  }

  /** The sequence number of the last event stored (0 when there is none yet). */
  async lastSeq(): Promise<number> {
    return retryUnavailable(
      `read the state of ${this.stream}`,
      this.retryForMs,
      async () => (await this.jsm.streams.info(this.stream)).state.last_seq,
      { stream: this.stream },
    );
  }

  private async readOnce<T>(
    filter: string,
    sinceSeq: number,
    limit: number,
  ): Promise<LoggedEvent<T>[]> {
    const out: LoggedEvent<T>[] = [];
    const ci = await this.jsm.consumers.add(this.stream, {
      filter_subject: filter,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: sinceSeq + 1,
      ack_policy: AckPolicy.None,
      inactive_threshold: nanos(30_000),
      mem_storage: true,
    });
    try {
      // num_pending at creation bounds the read, so fetch never waits for events not yet written.
      const want = Math.min(limit, ci.num_pending);
      const consumer = await this.js.consumers.get(this.stream, ci.name);
      while (out.length < want) {
        const batch = await consumer.fetch({
          max_messages: want - out.length,
          expires: this.timeoutMs,
        });
        let got = 0;
        for await (const m of batch) {
          got++;
          out.push({ seq: m.seq, subject: m.subject, time: m.time, value: m.json<T>() });
          if (out.length >= want) break;
        }
        if (got === 0) break;
      }
    } finally {
      await this.jsm.consumers.delete(this.stream, ci.name).catch(() => undefined);
    }
    return out;
  }
}
