/**
 * Prometheus metrics for Drover's daemons: a registry with Node's process metrics (event-loop
 * lag among them), typed counters, gauges and histograms, and the `/metrics` HTTP endpoint bound
 * to the address an operator chose. The only user of prom-client.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import client from 'prom-client';
import { DroverError, ErrorCode, nullLogger, type Logger } from '@drover/common';

export type Counter<L extends string = string> = client.Counter<L>;
export type Gauge<L extends string = string> = client.Gauge<L>;
export type Histogram<L extends string = string> = client.Histogram<L>;

/** Buckets for durations from a few milliseconds to minutes (seconds). */
export const DURATION_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
] as const;

/** One daemon's metrics. Names follow Prometheus conventions (`drover_..._seconds`, `_total`). */
export class Metrics {
  readonly registry = new client.Registry();

  /** `defaultMetrics`: Node's process metrics (CPU, memory, event-loop lag, GC). */
  constructor(options: { defaultMetrics?: boolean; labels?: Record<string, string> } = {}) {
    if (options.labels) this.registry.setDefaultLabels(options.labels);
    if (options.defaultMetrics !== false) {
      client.collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 20 });
    }
  }

  counter<L extends string>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    return new client.Counter({ name, help, labelNames, registers: [this.registry] });
  }

  /** A gauge; `collect` sets it at each scrape (values read from the daemon's state then). */
  gauge<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
    collect?: (g: Gauge<L>) => void | Promise<void>,
  ): Gauge<L> {
    return new client.Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      ...(collect
        ? {
            async collect(this: Gauge<L>) {
              await collect(this);
            },
          }
        : {}),
    });
  }

  histogram<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
    buckets: readonly number[] = DURATION_BUCKETS,
  ): Histogram<L> {
    return new client.Histogram({
      name,
      help,
      labelNames,
      buckets: [...buckets],
      registers: [this.registry],
    });
  }

  /** The exposition text (what `/metrics` serves). */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** `HOST:PORT` (`[::1]:9464` for IPv6) as a listen address; INVALID_ARGUMENT otherwise. */
export function parseListenAddress(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new DroverError(
      ErrorCode.InvalidArgument,
      `metrics address ${JSON.stringify(text)}: give HOST:PORT, e.g. 127.0.0.1:9464`,
      { details: { address: text } },
    );
  }
  return { host: (m[1] ?? m[2])!, port };
}

/** A running `/metrics` endpoint. */
export interface MetricsServer {
  /** Where it listens (the port the kernel chose when asked for 0). */
  readonly host: string;
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Serve `metrics` at `http://ADDRESS/metrics`, bound to that address only (a management
 * interface or loopback: the endpoint has no authentication). GET and HEAD only.
 */
export async function serveMetrics(
  metrics: Metrics,
  address: string,
  logger: Logger = nullLogger,
): Promise<MetricsServer> {
  const { host, port } = parseListenAddress(address);
  const log = logger.child({ component: 'metrics' });
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('see /metrics\n');
      return;
    }
    metrics.text().then(
      (body) => {
        res.writeHead(200, { 'content-type': metrics.contentType });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: unknown) => {
        log.warn('cannot collect metrics', { err });
        res.writeHead(500, { 'content-type': 'text/plain' }).end('cannot collect metrics\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) =>
      reject(
        new DroverError(ErrorCode.FailedPrecondition, `cannot serve metrics on ${address}`, {
          cause: err,
          details: { address },
        }),
      ),
    );
    server.listen(port, host, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  const shown = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  const url = `http://${shown}:${bound.port}/metrics`;
  log.info('metrics serving', { url });
  return {
    host: bound.address,
    port: bound.port,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
