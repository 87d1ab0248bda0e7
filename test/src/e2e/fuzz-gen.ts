/**
 * Hostile messages for the fuzz suite: a seeded PRNG and generators of malformed requests for
 * every agent and controller subject. Pure: no I/O.
 */
import {
  agentSubject,
  AgentOps,
  controllerSubject,
  ControllerOps,
  isAgentOp,
  isControllerOp,
  type Schema,
} from '@drover/protocol';

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Agent operations that change nothing: valid requests to them may succeed. */
export const READ_ONLY_AGENT_OPS = new Set<string>([
  'info',
  'list',
  'inspect',
  'logs',
  'preflight',
  'files-check',
  'images-list',
  'migrate-status',
  'migrations-list',
]);

/** Controller operations that change nothing. */
export const READ_ONLY_CONTROLLER_OPS = new Set<string>([
  'hosts',
  'jobs',
  'inspect',
  'logs',
  'preflight',
  'ops',
  'status',
  'events',
  'audit',
  'images-list',
  'images-inspect',
]);

/** Operation names no server knows (subject tokens: no spaces, dots split tokens). */
export const UNKNOWN_OPS = [
  'nope',
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  'valueOf',
  'RUN',
  'info.extra',
  'run.x.y',
  '%00',
  'x'.repeat(200),
] as const;

/** One message to send. */
export interface FuzzMessage {
  target: 'agent' | 'controller';
  op: string;
  subject: string;
  body: Uint8Array;
  /** What the message is, for failure reports. */
  kind: string;
  /**
   * What the server must answer: `invalid` (INVALID_ARGUMENT), `unknown` (NOT_FOUND), or
   * `valid-read` (any result or typed failure: a valid request to a read-only operation).
   */
  expect: 'invalid' | 'unknown' | 'valid-read';
}

type Rand = () => number;
/** Largest body sent: NATS's default max_payload (1 MiB) less room for headers. */
export const MAX_BODY = 1024 * 1024 - 1024;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const chance = (r: Rand, p: number): boolean => r() < p;
const enc = (s: string): Uint8Array => Buffer.from(s, 'utf8');

function randomBytes(r: Rand, n: number): Uint8Array {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

function randomString(r: Rand, n: number): string {
  const alphabet = 'abcXYZ019_.-/ \\"\'\u0000\u0001\n\t\u00e9\u4e2d\ud83d\ude00\ud800{}[]:,$`';
  let s = '';
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(r() * alphabet.length)];
  return s;
}

function deep(r: Rand, depth: number): string {
  const open = chance(r, 0.5) ? '[' : '{"a":';
  const close = open === '[' ? ']' : '}';
  return open.repeat(depth) + '1' + close.repeat(depth);
}

/** A hostile JSON value for a field (no `undefined`: that would be an absent field). */
function hostileValue(r: Rand, big: boolean): unknown {
  const choices: (() => unknown)[] = [
    () => null,
    () => true,
    () => false,
    () => 0,
    () => -1,
    () => -Number.MAX_SAFE_INTEGER * 4,
    () => 2 ** 64,
    () => 1.5,
    () => 1e308,
    () => -0,
    () => '',
    () => 'a',
    () => '../../../etc/passwd',
    () => '/../../etc/shadow',
    () => 'a/../../b',
    () => '..',
    () => '.',
    () => 'job\u0000x',
    () => '/tmp/\u0000',
    () => '__proto__',
    () => 'constructor',
    () => 'a'.repeat(64),
    () => 'a'.repeat(4097),
    () => randomString(r, 1 + Math.floor(r() * 40)),
    () => ['a'],
    () => [],
    () => [1, 'x', null, {}],
    () => ({}),
    () => JSON.parse('{"__proto__":{"polluted":true}}') as unknown,
    () => ({ constructor: { prototype: { polluted: true } } }),
    () => Array.from({ length: 300 }, (_, i) => `x${i}`),
    () => 'SIGSEGV',
    () => 'stop-copy',
  ];
  if (big) {
    choices.push(
      () => 'x'.repeat(200_000 + Math.floor(r() * 700_000)),
      () => Array.from({ length: 120_000 }, () => 1),
      () => Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`K${i}`, 'v'])),
    );
  }
  return pick(r, choices)();
}

function fieldsOf(schema: Schema<unknown>): string[] {
  const shape = (schema as { shape?: Record<string, unknown> }).shape;
  return shape ? Object.keys(shape) : [];
}

/** A JSON body for `op`: its own fields with hostile values, extra fields, hostile keys. */
function hostileObject(r: Rand, fields: readonly string[], big: boolean): string {
  const o: Record<string, unknown> = {};
  const parts: string[] = [];
  for (const f of fields) if (chance(r, 0.7)) o[f] = hostileValue(r, big && chance(r, 0.3));
  if (chance(r, 0.25)) o[pick(r, ['extra', 'jobID', 'Command', 'env ', 'id'])] = 1;
  for (const [k, v] of Object.entries(o)) parts.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
  // Keys JSON.stringify would not write as own properties of a plain object.
  if (chance(r, 0.15)) parts.push('"__proto__":{"polluted":true}');
  if (chance(r, 0.1)) parts.push('"constructor":{"prototype":{"polluted":true}}');
  if (chance(r, 0.05) && fields[0]) parts.push(`${JSON.stringify(fields[0])}:1e999`);
  if (chance(r, 0.05)) parts.push(`"${'k'.repeat(big ? 600_000 : 300)}":1`);
  return `{${parts.join(',')}}`;
}

function body(r: Rand, fields: readonly string[]): { kind: string; text: Uint8Array } {
  const roll = r();
  const big = chance(r, 0.02);
  if (roll < 0.08) {
    return {
      kind: 'invalid-json',
      text: enc(
        pick(r, [
          '{',
          '{"a":',
          '}',
          "{'a':1}",
          '{"a":1,}',
          'NaN',
          '{"n":NaN}',
          '{"n":-Infinity}',
          'undefined',
          '\ufeff{}x',
          '{"a":"\\u12"}',
          '[1,2',
          '"unterminated',
          '{"a":1}{"b":2}',
        ]),
      ),
    };
  }
  if (roll < 0.14) return { kind: 'binary', text: randomBytes(r, 1 + Math.floor(r() * 512)) };
  if (roll < 0.17) return { kind: 'empty', text: new Uint8Array(0) };
  if (roll < 0.2) {
    return {
      kind: 'deep',
      text: enc(deep(r, pick(r, [100, 5000, 100_000, 300_000]))),
    };
  }
  if (roll < 0.28) {
    return {
      kind: 'envelope',
      text: enc(
        pick(r, [
          '[]',
          '[{}]',
          '1',
          '-1',
          '"info"',
          'null',
          'true',
          '{"ok":true,"result":{}}',
          '{"ok":false,"failure":{"code":"INTERNAL","message":"x"}}',
          '{"id":"1","op":"run","payload":{"command":["sh"]}}',
          '{"request":{"command":["/bin/true"]}}',
          JSON.stringify({ jsonrpc: '2.0', method: 'run', params: { command: ['id'] } }),
        ]),
      ),
    };
  }
  if (roll < 0.3 && big) return { kind: 'huge-array', text: enc(`[${'0,'.repeat(400_000)}0]`) };
  return { kind: big ? 'object-big' : 'object', text: enc(hostileObject(r, fields, big)) };
}

/** What the server makes of the body, by the same schema (empty is `{}`, as on the server). */
function locallyValid(schema: Schema<unknown>, text: Uint8Array): boolean {
  try {
    const raw: unknown =
      text.byteLength === 0 ? {} : (JSON.parse(Buffer.from(text).toString('utf8')) ?? {});
    schema.parse(raw);
    return true;
  } catch {
    return false;
  }
}

/**
 * The next message. A body that happens to be valid for a state-changing operation is never
 * returned (it is drawn again), so nothing sent can change state.
 */
export function nextMessage(r: Rand, hostId: string): FuzzMessage {
  for (;;) {
    const target = chance(r, 0.5) ? 'agent' : 'controller';
    const known = target === 'agent' ? Object.keys(AgentOps) : Object.keys(ControllerOps);
    const op = chance(r, 0.08) ? pick(r, UNKNOWN_OPS) : pick(r, known);
    const subject = target === 'agent' ? agentSubject(hostId, op) : controllerSubject(op);
    const schema =
      target === 'agent'
        ? isAgentOp(op)
          ? (AgentOps[op] as Schema<unknown>)
          : null
        : isControllerOp(op)
          ? (ControllerOps[op] as Schema<unknown>)
          : null;
    const drawn = body(r, schema ? fieldsOf(schema) : ['jobId', 'command']);
    const kind = drawn.kind;
    // NATS refuses payloads over its max_payload (1 MiB) at the client: cut to just under it.
    const text = drawn.text.byteLength > MAX_BODY ? drawn.text.subarray(0, MAX_BODY) : drawn.text;
    if (schema === null) return { target, op, subject, body: text, kind, expect: 'unknown' };
    if (!locallyValid(schema, text))
      return { target, op, subject, body: text, kind, expect: 'invalid' };
    const readOnly = (target === 'agent' ? READ_ONLY_AGENT_OPS : READ_ONLY_CONTROLLER_OPS).has(op);
    if (readOnly) return { target, op, subject, body: text, kind, expect: 'valid-read' };
  }
}
