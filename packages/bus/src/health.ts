/** Is a NATS server ready for Drover: does JetStream answer through it alone? */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { DroverError, ErrorCode } from '@drover/common';

/**
 * Resolves true once a client connected to `url` alone (no reconnects, no other servers) gets
 * JetStream account info, which needs a meta leader in a cluster. Throws UNAVAILABLE (retryable)
 * otherwise: callers poll it while a server starts. With `tls`, connects with that client
 * certificate (one allowed the JetStream API: a controller's).
 */
export async function jetStreamAnswers(
  url: string,
  timeoutMs = 1000,
  tls?: { caFile: string; certFile: string; keyFile: string },
): Promise<true> {
  let nc;
  try {
    nc = await connect({
      servers: url,
      reconnect: false,
      timeout: timeoutMs,
      ...(tls ? { tls: { ...tls } } : {}),
    });
  } catch (err) {
    throw new DroverError(ErrorCode.Unavailable, `no NATS server answers at ${url}`, {
      retryable: true,
      cause: err,
      details: { url },
    });
  }
  try {
    const jsm = await jetstreamManager(nc, { timeout: timeoutMs });
    await jsm.getAccountInfo();
    return true;
  } catch (err) {
    throw new DroverError(ErrorCode.Unavailable, `JetStream does not answer through ${url}`, {
      retryable: true,
      cause: err,
      details: { url },
    });
  } finally {
    await nc.close();
  }
}
