// A tiny RESP2 client over node:net for the redis workload: pipelined commands, no npm packages.
import { Buffer } from 'node:buffer';
import { setTimeout, clearTimeout } from 'node:timers';
import net from 'node:net';

/** Encode one command as a RESP array of bulk strings. */
function encode(args) {
  let out = `*${args.length}\r\n`;
  for (const a of args) out += `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`;
  return out;
}

/**
 * Parse one reply from `buf` at `pos`: {value, pos} or undefined when more bytes are needed.
 * Errors come back as Error values, not throws, so one bad reply does not lose the others.
 */
function parse(buf, pos) {
  const eol = buf.indexOf('\r\n', pos);
  if (eol < 0) return undefined;
  const type = String.fromCharCode(buf[pos]);
  const line = buf.toString('utf8', pos + 1, eol);
  const next = eol + 2;
  if (type === '+') return { value: line, pos: next };
  if (type === '-') return { value: new Error(line), pos: next };
  if (type === ':') return { value: Number(line), pos: next };
  if (type === '$') {
    const len = Number(line);
    if (len < 0) return { value: null, pos: next };
    if (buf.length < next + len + 2) return undefined;
    return { value: buf.toString('utf8', next, next + len), pos: next + len + 2 };
  }
  if (type === '*') {
    const n = Number(line);
    if (n < 0) return { value: null, pos: next };
    const items = [];
    let p = next;
    for (let i = 0; i < n; i++) {
      const r = parse(buf, p);
      if (r === undefined) return undefined;
      items.push(r.value);
      p = r.pos;
    }
    return { value: items, pos: p };
  }
  throw new Error(`bad RESP type ${JSON.stringify(type)}`);
}

/** A connected client; `call` pipelines commands, `close` ends the connection and waits for it. */
export class RespClient {
  /** @param {net.Socket} sock */
  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.waiting = []; // resolvers, in command order
    this.failed = undefined;
    sock.on('data', (d) => this.#onData(d));
    sock.on('error', (err) => this.#fail(err));
    sock.on('close', () => this.#fail(new Error('connection closed')));
  }

  /** Connect to 127.0.0.1:port. */
  static connect(port, timeoutMs = 2000) {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      const timer = setTimeout(() => sock.destroy(new Error('connect timeout')), timeoutMs);
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(new RespClient(sock));
      });
    });
  }

  /** Send commands in one write; resolves with their replies in order. */
  call(...commands) {
    if (this.failed) return Promise.reject(this.failed);
    const replies = commands.map(
      () => new Promise((resolve, reject) => this.waiting.push({ resolve, reject })),
    );
    this.sock.write(commands.map(encode).join(''));
    return Promise.all(replies);
  }

  close() {
    return new Promise((resolve) => {
      this.sock.once('close', () => resolve());
      this.sock.end();
    });
  }

  #onData(d) {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    let pos = 0;
    for (;;) {
      const r = parse(this.buf, pos);
      if (r === undefined) break;
      pos = r.pos;
      this.waiting.shift()?.resolve(r.value);
    }
    this.buf = this.buf.subarray(pos);
  }

  #fail(err) {
    this.failed ??= err;
    for (const w of this.waiting.splice(0)) w.reject(err);
  }
}
