/**
 * The tour's client outside the cluster: one TCP connection to the tour's echo service, a
 * numbered line every 20 ms, each echo checked, the longest wait measured — the client's own view
 * of the service moving from host to host under it.
 */
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { retry } from '@drover/common';

/** The service the tour runs as a job: an echo server (Node, no io_uring: CRIU cannot dump it). */
export const ECHO_SERVICE = [
  'node',
  '-e',
  "require('net').createServer((s) => { s.setNoDelay(true); s.pipe(s); }).listen(7000)",
];
export const ECHO_PORT = 7000;

/** What the client saw. */
export interface EchoView {
  /** Round trips answered. */
  exchanges: number;
  /** Longest time between two answers (ms). */
  longestGapMs: number;
  /** The client's port: one connection from start to end. */
  localPort: number;
  /** Why the connection ended or an answer was wrong (null: never). */
  failure: string | null;
}

/** One held connection exchanging numbered lines with the echo service. */
export class EchoClient {
  private view: EchoView;
  private timer: NodeJS.Timeout | null = null;

  private constructor(private readonly sock: Socket) {
    this.view = { exchanges: 0, longestGapMs: 0, localPort: sock.localPort ?? 0, failure: null };
    let last = performance.now();
    let sent = 0;
    createInterface({ input: sock }).on('line', (line) => {
      const want = this.view.exchanges + 1;
      if (Number(line) !== want) this.view.failure ??= `echo ${line}, expected ${want}`;
      this.view.exchanges = want;
      const now = performance.now();
      this.view.longestGapMs = Math.max(this.view.longestGapMs, now - last);
      last = now;
    });
    const end = (why: string): void => {
      this.view.failure ??= why;
      if (this.timer) clearInterval(this.timer);
    };
    sock.on('error', (e) => end(`connection error: ${e.message}`));
    sock.on('close', () => end('the connection closed'));
    // One line in flight at a time: the next goes once the previous one came back.
    this.timer = setInterval(() => {
      if (sent === this.view.exchanges) sock.write(`${++sent}\n`);
    }, 20);
  }

  /** Connect (retrying while the service starts), then start exchanging. */
  static async open(host: string, port: number, timeoutMs = 20_000): Promise<EchoClient> {
    const sock = await retry(
      () =>
        new Promise<Socket>((resolve, reject) => {
          const s = connect({ host, port });
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        }),
      { forMs: timeoutMs, pauseMs: () => 200 },
    );
    sock.setNoDelay(true);
    return new EchoClient(sock);
  }

  now(): EchoView {
    return { ...this.view, longestGapMs: Math.round(this.view.longestGapMs) };
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.sock.destroy();
  }
}
