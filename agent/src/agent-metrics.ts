/**
 * The agent's Prometheus metrics: its jobs by state, local checkpoints (outcome, dump time, time
 * frozen), CRIU failures by request and reason, NATS reconnects, and Node's own (event-loop lag).
 * Counted where requests are answered, by wrapping the API handlers: the operations themselves
 * do not know about metrics. The list is in docs/OBSERVABILITY.md.
 */
import type { AgentHandlers } from '@drover/bus';
import { Metrics, type Counter, type Histogram } from '@drover/metrics';
import { JobState } from '@drover/protocol';
import type { JobStore } from './job-store.js';

/** The metrics of one agent. */
export class AgentMetrics {
  readonly metrics: Metrics;
  private readonly checkpoints: Counter<'outcome'>;
  private readonly dumpSeconds: Histogram;
  private readonly frozenSeconds: Histogram;
  private readonly criuFailures: Counter<'request' | 'reason'>;
  readonly natsReconnects: Counter;

  constructor(store: Pick<JobStore, 'list'>, facts: { host: string; criu: () => string }) {
    this.metrics = new Metrics();
    this.metrics.gauge(
      'drover_agent_jobs',
      "Jobs on this host's disk, by state",
      ['state'],
      async (g) => {
        const counts = new Map<string, number>(Object.values(JobState).map((s) => [s, 0]));
        for (const r of await store.list()) counts.set(r.state, (counts.get(r.state) ?? 0) + 1);
        g.reset();
        for (const [state, n] of counts) g.set({ state }, n);
      },
    );
    this.metrics.gauge(
      'drover_agent_info',
      'This agent: its host and CRIU version',
      ['host', 'criu'],
      (g) => {
        g.reset();
        g.set({ host: facts.host, criu: facts.criu() }, 1);
      },
    );
    this.checkpoints = this.metrics.counter(
      'drover_checkpoints_total',
      'Checkpoints of jobs on this host (cluster cuts and self-checkpoints), by outcome',
      ['outcome'],
    );
    this.dumpSeconds = this.metrics.histogram(
      'drover_checkpoint_dump_seconds',
      'How long CRIU took to dump a job for a checkpoint',
    );
    this.frozenSeconds = this.metrics.histogram(
      'drover_checkpoint_frozen_seconds',
      'How long a job was frozen for a checkpoint',
    );
    this.criuFailures = this.metrics.counter(
      'drover_criu_failures_total',
      "CRIU operations that failed here, by request and by the CRIU source file of CRIU's first error",
      ['request', 'reason'],
    );
    this.natsReconnects = this.metrics.counter(
      'drover_nats_reconnects_total',
      'Times the NATS connection was re-established',
    );
  }

  /** `handlers`, counting what they do: checkpoints, and CRIU failures in any operation. */
  instrument(handlers: AgentHandlers): AgentHandlers {
    const wrapped = { ...handlers } as Record<string, (r: never) => Promise<unknown>>;
    for (const [op, handler] of Object.entries(handlers)) {
      const h = handler as (r: never) => Promise<unknown>;
      wrapped[op] = async (req: never) => {
        try {
          return await h(req);
        } catch (err) {
          for (const f of criuFailures(err)) this.criuFailures.inc(f);
          throw err;
        }
      };
    }
    type Image = { dumpMs: number; frozenMs: number };
    const done = (image: Image): void => {
      this.checkpoints.inc({ outcome: 'done' });
      this.dumpSeconds.observe(image.dumpMs / 1000);
      this.frozenSeconds.observe(image.frozenMs / 1000);
    };
    const counted =
      <T>(handler: (r: never) => Promise<unknown>, images: (reply: T) => Image[]) =>
      async (req: never) => {
        try {
          const reply = (await handler(req)) as T;
          images(reply).forEach(done);
          return reply;
        } catch (err) {
          this.checkpoints.inc({ outcome: 'failed' });
          throw err;
        }
      };
    wrapped['checkpoint'] = counted(wrapped['checkpoint']!, (image: Image) => [image]);
    // A cluster's dumps on this host in one request: each counts as a checkpoint.
    wrapped['checkpoint-many'] = counted(
      wrapped['checkpoint-many']!,
      (r: { dumps: { image: Image }[] }) => r.dumps.map((d) => d.image),
    );
    return wrapped as unknown as AgentHandlers;
  }
}

/**
 * The CRIU failures in an error: itself, its causes and the errors attached during rollback.
 * The reason is the CRIU source file of the first error line of CRIU's log (`Error
 * (criu/sk-inet.c:...)` → `sk-inet`), a small fixed set, so the label stays bounded.
 */
export function criuFailures(err: unknown, depth = 0): { request: string; reason: string }[] {
  if (depth > 6 || typeof err !== 'object' || err === null) return [];
  const e = err as {
    code?: unknown;
    details?: Record<string, unknown>;
    cause?: unknown;
    suppressed?: unknown[];
  };
  const out: { request: string; reason: string }[] = [];
  if (e.code === 'CRIU') {
    const d = e.details ?? {};
    const tail = Array.isArray(d['logTail']) ? (d['logTail'] as unknown[]).map(String) : [];
    const line = tail.find((l) => /Error \(criu\//.test(l) && !/RLIMIT_NOFILE/.test(l));
    const file = line ? /Error \(criu\/([A-Za-z0-9_-]+)\.c:/.exec(line)?.[1] : undefined;
    const request = typeof d['request'] === 'string' ? d['request'].toLowerCase() : 'unknown';
    out.push({ request: request.slice(0, 32), reason: file ?? 'unknown' });
  }
  out.push(...criuFailures(e.cause, depth + 1));
  for (const s of e.suppressed ?? []) out.push(...criuFailures(s, depth + 1));
  return out;
}
