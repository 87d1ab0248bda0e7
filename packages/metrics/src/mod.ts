/** @drover/metrics: Prometheus metrics and their HTTP endpoint; the only user of prom-client. */
export { DURATION_BUCKETS, Metrics, parseListenAddress, serveMetrics } from './metrics.js';
export type { Counter, Gauge, Histogram, MetricsServer } from './metrics.js';
