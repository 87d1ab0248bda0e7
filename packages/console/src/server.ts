/**
 * The web console's HTTP side: the page and its script, the cluster's picture (`/api/state`) and
 * its live feed (`/api/events`, server-sent events), and actions (`POST /api/actions/OP`) when
 * the console was started to allow them with an operator's certificate.
 *
 * How a browser gets in: the console prints a URL with a one-time-use-per-browser token
 * (`/login?token=...`, like Jupyter); opening it sets an HttpOnly, SameSite=Strict session
 * cookie and drops the token from the address bar. Every other request needs that cookie, and an
 * action also needs the `X-Drover-Console` header (a cross-site form cannot send one). The
 * console acts with the identity of the certificate it connected to NATS with: NATS enforces its
 * role whatever the page asks. Listening on loopback (the default), reach it from elsewhere
 * through `ssh -L`.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { ControllerClient, type Bus } from '@drover/bus';
import { DroverError, ErrorCode, nullLogger, type Logger } from '@drover/common';
import { ControllerOps, type ControllerOp, type Identity } from '@drover/protocol';
import { ClusterView } from './cluster-view.js';

/** What the console may ask the controller to do (with `actions`). */
export const CONSOLE_ACTIONS = ['migrate', 'drain', 'cordon', 'uncordon', 'checkpoint'] as const;
type Action = (typeof CONSOLE_ACTIONS)[number];

/** How the console runs. */
export interface ConsoleOptions {
  /** Its NATS connection: the console acts with this connection's identity. */
  bus: Bus;
  /** `HOST:PORT` to listen on (port 0: any free one). */
  listen: string;
  /** Allow actions (migrate, drain, cordon, checkpoint). Refused for a viewer's identity. */
  actions: boolean;
  logger?: Logger;
  /** How often the controller is asked for the picture. Default 1500 ms. */
  pollMs?: number;
}

/** A running console. */
export interface RunningConsole {
  /** The address to open: it carries the login token. */
  loginUrl: string;
  /** The address without the token. */
  url: string;
  identity: Identity | null;
  close(): Promise<void>;
}

const WEB_DIR = fileURLToPath(new URL('./web/', import.meta.url));
const STATIC: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/dom.js': { file: 'dom.js', type: 'text/javascript; charset=utf-8' },
  '/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
};
const COOKIE = 'drover_console';
const MAX_BODY = 64 * 1024;
const ACTION_TIMEOUT_MS = 15 * 60_000;

/** Start the console. Refuses (PERMISSION_DENIED) `actions` with a viewer's certificate. */
export async function startConsole(opts: ConsoleOptions): Promise<RunningConsole> {
  const log = (opts.logger ?? nullLogger).child({ component: 'console' });
  const identity = opts.bus.identity;
  if (opts.actions && identity?.role === 'viewer') {
    throw new DroverError(
      ErrorCode.PermissionDenied,
      `the certificate is viewer ${identity.name}'s: a viewer may only look (drop --actions, or use an operator's certificate)`,
      { details: { identity } },
    );
  }
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(opts.listen.trim());
  if (!m) {
    throw new DroverError(
      ErrorCode.InvalidArgument,
      `--listen wants HOST:PORT, e.g. 127.0.0.1:7777 (got ${JSON.stringify(opts.listen)})`,
    );
  }
  const view = new ClusterView(opts.bus, {
    logger: log,
    ...(opts.pollMs !== undefined ? { pollMs: opts.pollMs } : {}),
  });
  await view.start();
  const client = new ControllerClient(opts.bus);
  const token = randomBytes(24).toString('hex');
  const sessions = new Set<string>();
  const streams = new Set<ServerResponse>();
  const hello = { identity, actions: opts.actions };
  let nextAction = 1;

  const send = (res: ServerResponse, event: string, data: unknown): void => {
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  const stopWatching = view.watch((kind, data) => {
    for (const res of streams) send(res, kind, data);
  });

  const act = (op: Action, req: unknown): number => {
    const id = nextAction++;
    const tell = (result: { ok: boolean; message: string; opId?: string }): void => {
      for (const res of streams) send(res, 'action', { id, op, ...result });
      void view.poll();
    };
    client
      .call(op, req as never, ACTION_TIMEOUT_MS)
      .then((r) => {
        const opId = (r as { opId?: string }).opId;
        const state = (r as { state?: string }).state;
        tell({
          ok: state === undefined || state === 'done',
          message: `${op}: ${state ?? 'done'}`,
          ...(opId ? { opId } : {}),
        });
      })
      .catch((err: unknown) => tell({ ok: false, message: `${op}: ${(err as Error).message}` }));
    // The operation shows up in the next picture as it starts.
    setTimeout(() => void view.poll(), 300).unref();
    return id;
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.warn('console request failed', { url: req.url, err });
      if (!res.headersSent) json(res, 500, { error: 'internal error' });
      else res.end();
    });
  });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://console');
    res.setHeader('cache-control', 'no-store');
    res.setHeader('x-frame-options', 'DENY');
    res.setHeader('referrer-policy', 'no-referrer');
    res.setHeader(
      'content-security-policy',
      "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    );
    if (url.pathname === '/login' && req.method === 'GET') {
      if (!sameSecret(url.searchParams.get('token') ?? '', token)) {
        return text(
          res,
          401,
          'This login link is not valid: open the one `drover console` printed.',
        );
      }
      const session = randomBytes(32).toString('hex');
      sessions.add(session);
      res.writeHead(303, {
        location: '/',
        'set-cookie': `${COOKIE}=${session}; HttpOnly; SameSite=Strict; Path=/`,
      });
      return void res.end();
    }
    if (!sessions.has(cookieOf(req))) {
      return text(res, 401, 'Not signed in: open the login URL that `drover console` printed.');
    }
    const asset = STATIC[url.pathname];
    if (asset && req.method === 'GET') {
      const body = await readFile(WEB_DIR + asset.file);
      res.writeHead(200, { 'content-type': asset.type });
      return void res.end(body);
    }
    if (url.pathname === '/api/state' && req.method === 'GET') {
      return json(res, 200, { ...hello, snapshot: view.current() });
    }
    if (url.pathname === '/api/events' && req.method === 'GET') {
      res.writeHead(200, {
        'content-type': 'text/event-stream',
        connection: 'keep-alive',
      });
      streams.add(res);
      req.once('close', () => streams.delete(res));
      send(res, 'hello', hello);
      send(res, 'snapshot', view.current());
      return;
    }
    const action = /^\/api\/actions\/([a-z-]+)$/.exec(url.pathname)?.[1];
    if (action !== undefined && req.method === 'POST') {
      if (req.headers['x-drover-console'] !== '1')
        return json(res, 403, { error: 'actions need the X-Drover-Console header' });
      if (!opts.actions) {
        return json(res, 403, {
          error:
            'this console is read-only: start it with --actions and an operator certificate to act',
        });
      }
      if (!(CONSOLE_ACTIONS as readonly string[]).includes(action))
        return json(res, 404, { error: `no action ${action}` });
      let body: unknown;
      try {
        body = JSON.parse((await readBody(req)) || '{}');
        body = ControllerOps[action as ControllerOp].parse(body);
      } catch (err) {
        return json(res, 400, { error: (err as Error).message });
      }
      return json(res, 202, { id: act(action as Action, body) });
    }
    return text(res, 404, 'Not found.');
  };

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => {
      stopWatching();
      view.stop();
      reject(
        new DroverError(ErrorCode.FailedPrecondition, `cannot listen on ${opts.listen}`, {
          cause: err,
        }),
      );
    });
    server.listen(Number(m[3]), m[1] ?? m[2], () => resolve());
  });
  const a = server.address() as AddressInfo;
  const base = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  log.info('console serving', { url: base, actions: opts.actions, identity });
  return {
    url: `${base}/`,
    loginUrl: `${base}/login?token=${token}`,
    identity,
    async close() {
      stopWatching();
      view.stop();
      for (const s of streams) s.end();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

function cookieOf(req: IncomingMessage): string {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, v] = part.trim().split('=');
    if (k === COOKIE && v) return v;
  }
  return '';
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function text(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(body + '\n');
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error(`a request body is at most ${MAX_BODY} bytes`));
        req.destroy();
      } else parts.push(c);
    });
    req.once('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.once('error', reject);
  });
}
