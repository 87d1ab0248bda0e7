/**
 * Clients outside the cluster (the test runner's root namespace) of the network workloads, each
 * measuring what a real client would see while its server moves: a redis client on one held
 * connection, an HTTP hammer opening a new connection per request, and the outside end of a
 * `tcp-pair.py` connection. None of them ever reconnects; each reports the longest gap it saw.
 */
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';

/** A RESP reply. */
export type Resp = string | number | null | Resp[] | Error;

/** One redis connection speaking RESP2, commands pipelined in order. */
export class RedisConnection {
  private buf = Buffer.alloc(0);
  private readonly waiting: { resolve: (r: Resp) => void; reject: (e: Error) => void }[] = [];
  private closedWith: Error | null = null;
  /** Local port: the same connection for the connection's whole life. */
  readonly localPort: number;

  private constructor(private readonly sock: Socket) {
    this.localPort = sock.localPort ?? 0;
    sock.on('data', (d: Buffer) => this.onData(d));
    const close = (err: Error): void => {
      this.closedWith ??= err;
      for (const w of this.waiting.splice(0)) w.reject(this.closedWith);
    };
    sock.on('error', close);
    sock.on('close', () => close(new Error('connection closed')));
  }

  static open(host: string, port: number, timeoutMs = 10_000): Promise<RedisConnection> {
    return new Promise((resolve, reject) => {
      const sock = connect({ host, port });
      const timer = setTimeout(() => sock.destroy(new Error('connect timeout')), timeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.setNoDelay(true);
        resolve(new RedisConnection(sock));
      });
      sock.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  /** Send one command; resolves with its reply (an Error reply rejects). */
  call(...args: (string | number)[]): Promise<Resp> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const parts = args.map(String);
    const wire = `*${parts.length}\r\n${parts.map((p) => `$${Buffer.byteLength(p)}\r\n${p}\r\n`).join('')}`;
    return new Promise((resolve, reject) => {
      this.waiting.push({
        resolve: (r) => (r instanceof Error ? reject(r) : resolve(r)),
        reject,
      });
      this.sock.write(wire);
    });
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      const parsed = parseResp(this.buf, 0);
      if (parsed === null) return;
      this.buf = this.buf.subarray(parsed.end);
      this.waiting.shift()?.resolve(parsed.value);
    }
  }
}

function parseResp(b: Buffer, at: number): { value: Resp; end: number } | null {
  const eol = b.indexOf('\r\n', at);
  if (eol < 0) return null;
  const head = b.toString('utf8', at + 1, eol);
  switch (String.fromCharCode(b[at] ?? 0)) {
    case '+':
      return { value: head, end: eol + 2 };
    case '-':
      return { value: new Error(head), end: eol + 2 };
    case ':':
      return { value: Number(head), end: eol + 2 };
    case '$': {
      const n = Number(head);
      if (n < 0) return { value: null, end: eol + 2 };
      if (b.length < eol + 2 + n + 2) return null;
      return { value: b.toString('utf8', eol + 2, eol + 2 + n), end: eol + 2 + n + 2 };
    }
    case '*': {
      const n = Number(head);
      const out: Resp[] = [];
      let end = eol + 2;
      for (let i = 0; i < n; i++) {
        const p = parseResp(b, end);
        if (p === null) return null;
        out.push(p.value);
        end = p.end;
      }
      return { value: n < 0 ? null : out, end };
    }
    default:
      throw new Error(`bad RESP byte ${b[at]}`);
  }
}

/** Key and value of dataset key `i` (deterministic, so a digest can be recomputed). */
export const datasetEntry = (i: number): [string, string] => [
  `key:${i}`,
  `v${i}-${createHash('sha1').update(String(i)).digest('hex').slice(0, 16)}`,
];

/** Load `n` keys in pipelined batches. */
export async function loadDataset(c: RedisConnection, n: number): Promise<void> {
  for (let i = 0; i < n; i += 1000) {
    const batch: Promise<Resp>[] = [];
    for (let k = i; k < Math.min(n, i + 1000); k++) batch.push(c.call('SET', ...datasetEntry(k)));
    await Promise.all(batch);
  }
}

/** SHA-256 over every dataset key's value as the server returns it (MGET in batches). */
export async function datasetDigest(c: RedisConnection, n: number): Promise<string> {
  const h = createHash('sha256');
  for (let i = 0; i < n; i += 1000) {
    const keys: string[] = [];
    for (let k = i; k < Math.min(n, i + 1000); k++) keys.push(datasetEntry(k)[0]);
    const values = (await c.call('MGET', ...keys)) as (string | null)[];
    for (const v of values) h.update(`${v ?? '<nil>'}\n`);
  }
  return h.digest('hex');
}

/** The digest the dataset must have: computed without the server. */
export function expectedDigest(n: number): string {
  const h = createHash('sha256');
  for (let k = 0; k < n; k++) h.update(`${datasetEntry(k)[1]}\n`);
  return h.digest('hex');
}

/** What a client loop saw. */
export interface ClientReport {
  /** Acknowledged operations. */
  ok: number;
  /** Operations that failed (an error, a reset, a timeout). */
  failed: number;
  /** Longest time between two successful operations (ms). */
  longestGapMs: number;
  errors: string[];
}

/**
 * One connection, one write every `intervalMs`: `INCR counter`, each acknowledged value checked
 * to be exactly the previous one plus one. Runs until `stop()`; any error ends it.
 */
export function redisWriter(
  c: RedisConnection,
  intervalMs = 5,
): {
  stop(): Promise<ClientReport>;
  report(): ClientReport;
} {
  const r: ClientReport = { ok: 0, failed: 0, longestGapMs: 0, errors: [] };
  let running = true;
  let last = performance.now();
  const loop = (async () => {
    let expected = Number(await c.call('GET', 'counter')) + 1;
    while (running) {
      try {
        const got = await c.call('INCR', 'counter');
        if (got !== expected) throw new Error(`INCR answered ${String(got)}, expected ${expected}`);
        expected++;
        r.ok++;
        const now = performance.now();
        r.longestGapMs = Math.max(r.longestGapMs, now - last);
        last = now;
      } catch (err) {
        r.failed++;
        r.errors.push(String(err));
        return;
      }
      await new Promise((res) => setTimeout(res, intervalMs));
    }
  })();
  return {
    report: () => ({ ...r, longestGapMs: Math.round(r.longestGapMs) }),
    stop: async () => {
      running = false;
      await loop;
      return { ...r, longestGapMs: Math.round(r.longestGapMs) };
    },
  };
}

/**
 * `threads` loops, each GETting `url` on a new connection per request (no keep-alive) as fast as
 * answers come; a request fails on an error, a non-200 answer, a wrong body, or no answer in
 * `timeoutMs` (long enough for a SYN retransmitted across a move).
 */
export function httpHammer(
  url: string,
  expectBody: string,
  threads = 4,
  timeoutMs = 15_000,
): { stop(): Promise<ClientReport>; report(): ClientReport } {
  const r: ClientReport = { ok: 0, failed: 0, longestGapMs: 0, errors: [] };
  let running = true;
  let last = performance.now();
  const once = (): Promise<void> =>
    new Promise((resolve) => {
      const req = request(url, { agent: false, timeout: timeoutMs }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => {
          if (res.statusCode === 200 && body === expectBody) {
            r.ok++;
            const now = performance.now();
            r.longestGapMs = Math.max(r.longestGapMs, now - last);
            last = now;
          } else {
            r.failed++;
            r.errors.push(`status ${res.statusCode}, body ${body.slice(0, 80)}`);
          }
          resolve();
        });
        res.on('error', (e) => {
          r.failed++;
          r.errors.push(String(e));
          resolve();
        });
      });
      req.on('timeout', () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
      req.on('error', (e) => {
        r.failed++;
        r.errors.push(String(e));
        resolve();
      });
      req.end();
    });
  const loops = Array.from({ length: threads }, async () => {
    while (running) await once();
  });
  return {
    report: () => ({
      ...r,
      longestGapMs: Math.round(r.longestGapMs),
      errors: r.errors.slice(0, 20),
    }),
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return { ...r, longestGapMs: Math.round(r.longestGapMs), errors: r.errors.slice(0, 20) };
    },
  };
}

/**
 * The outside end of `tcp-pair.py --role client`: a server on `host:port` that checks each
 * number is the next and echoes it, and counts the connections it accepted (one, if the job's
 * connection survives every move).
 */
export class PairServer {
  accepts = 0;
  count = 0;
  failure: string | null = null;
  longestGapMs = 0;
  private readonly sockets = new Set<Socket>();
  private constructor(private readonly server: Server) {}

  static async listen(host: string, port: number): Promise<PairServer> {
    let self: PairServer | null = null;
    const server = createServer((sock) => self!.serve(sock));
    self = new PairServer(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    return self;
  }

  private serve(sock: Socket): void {
    this.sockets.add(sock);
    sock.once('close', () => this.sockets.delete(sock));
    this.accepts++;
    if (this.accepts > 1) this.failure ??= `a second connection from ${sock.remotePort}`;
    let buf = '';
    let last = performance.now();
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (Number(line) !== this.count + 1)
          this.failure ??= `got ${line}, expected ${this.count + 1}`;
        this.count = Number(line);
        const now = performance.now();
        this.longestGapMs = Math.max(this.longestGapMs, now - last);
        last = now;
        sock.write(`${line}\n`);
      }
    });
    sock.on('error', (e) => (this.failure ??= String(e)));
  }

  /** Stop listening and drop the connection (a server's close waits for open connections). */
  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
