/** Unit tests of the frame codec and the message helpers: round trips and every corruption. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ErrorCode } from '@drover/common';
import { TransferError } from './errors.js';
import {
  FRAME_HEADER_BYTES,
  FrameDecoder,
  MAX_FRAME_PAYLOAD,
  encodeFrame,
  encodeJsonFrame,
  type Frame,
} from './frame.js';
import { fileNameProblem } from './messages.js';

const sample = (): Buffer[] => [
  encodeJsonFrame('HELLO', { migrationId: 'm', token: 't', version: 1 }),
  encodeFrame('PING'),
  encodeFrame('DATA', randomBytes(70_000)),
  encodeFrame('DATA', Buffer.from([1])),
  encodeJsonFrame('DONE', { files: 1, bytes: 70_001 }),
];

const summary = (frames: Frame[]): Array<[string, string, number]> =>
  frames.map((f) => [f.type, f.payload.toString('hex'), f.offset]);

const expected = (bufs: Buffer[]): Array<[string, string, number]> => {
  const types = ['HELLO', 'PING', 'DATA', 'DATA', 'DONE'];
  let offset = 0;
  return bufs.map((b, i) => {
    const row: [string, string, number] = [
      types[i]!,
      b.subarray(FRAME_HEADER_BYTES).toString('hex'),
      offset,
    ];
    offset += b.length;
    return row;
  });
};

const catchError = (fn: () => unknown): TransferError => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof TransferError, `expected TransferError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a TransferError');
};

test('header layout: type, flags, reserved, BE length, BE CRC32', () => {
  const f = encodeFrame('FILE_END', Buffer.from('abc'));
  assert.equal(f.length, FRAME_HEADER_BYTES + 3);
  assert.equal(f[0], 5);
  assert.equal(f.readUInt8(1), 0);
  assert.equal(f.readUInt16BE(2), 0);
  assert.equal(f.readUInt32BE(4), 3);
  assert.equal(f.readUInt32BE(8), 0x352441c2); // CRC-32 of "abc"
});

test('round trip: whole stream in one chunk, and frame-by-frame', () => {
  const bufs = sample();
  const d1 = new FrameDecoder();
  assert.deepEqual(summary(d1.push(Buffer.concat(bufs))), expected(bufs));
  d1.end();
  const d2 = new FrameDecoder();
  const got = bufs.flatMap((b) => d2.push(b));
  assert.deepEqual(summary(got), expected(bufs));
  assert.equal(d2.offset, Buffer.concat(bufs).length);
});

test('round trip: split into 1-byte chunks and random-sized chunks', () => {
  const bufs = sample();
  const all = Buffer.concat(bufs);
  const bytewise = new FrameDecoder();
  const got1: Frame[] = [];
  for (let i = 0; i < all.length; i++) got1.push(...bytewise.push(all.subarray(i, i + 1)));
  assert.deepEqual(summary(got1), expected(bufs));
  for (let round = 0; round < 20; round++) {
    const d = new FrameDecoder();
    const got: Frame[] = [];
    for (let i = 0; i < all.length;) {
      const n = 1 + Math.floor(Math.random() * 20_000);
      got.push(...d.push(all.subarray(i, i + n)));
      i += n;
    }
    d.end();
    assert.deepEqual(summary(got), expected(bufs));
  }
});

test('a flipped payload byte is a checksum error at the frame offset', () => {
  const bufs = sample();
  const all = Buffer.concat(bufs);
  const dataAt = bufs[0]!.length + bufs[1]!.length;
  all[dataAt + FRAME_HEADER_BYTES + 1234]! ^= 0x01;
  const d = new FrameDecoder();
  const err = catchError(() => d.push(all));
  assert.equal(err.kind, 'checksum');
  assert.equal(err.code, ErrorCode.InvalidArgument);
  assert.equal(err.frame, 'DATA');
  assert.equal(err.offset, dataAt);
  assert.equal(err.details.offset, dataAt);
  // poisoned: later input gets the same error
  assert.equal(
    catchError(() => d.push(encodeFrame('PING'))),
    err,
  );
});

test('a corrupt frame after a good one reports its own offset', () => {
  const d = new FrameDecoder();
  const good = encodeFrame('PING');
  assert.equal(d.push(good).length, 1);
  const bad = encodeFrame('DATA', Buffer.from('xyz'));
  bad[FRAME_HEADER_BYTES] = 0;
  assert.equal(catchError(() => d.push(bad)).offset, good.length);
});

test('an oversize length is a protocol error as soon as the header arrives', () => {
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h[0] = 4;
  h.writeUInt32BE(MAX_FRAME_PAYLOAD + 1, 4);
  const err = catchError(() => new FrameDecoder().push(h));
  assert.equal(err.kind, 'protocol');
  assert.equal(err.frame, 'DATA');
  assert.match(err.message, /exceeds/);
  // a lowered limit (pre-authentication) applies too
  const small = new FrameDecoder({ maxPayload: 16 });
  assert.equal(
    catchError(() => small.push(encodeFrame('HELLO', Buffer.alloc(17)))).kind,
    'protocol',
  );
  assert.throws(() => encodeFrame('DATA', Buffer.alloc(MAX_FRAME_PAYLOAD + 1)), TransferError);
});

test('an unknown type, or non-zero flags/reserved, is a protocol error', () => {
  for (const [at, value] of [
    [0, 0],
    [0, 10],
    [0, 255],
    [1, 1],
    [3, 1],
  ] as const) {
    const f = encodeFrame('PING');
    f[at] = value;
    const err = catchError(() => new FrameDecoder().push(Buffer.concat([encodeFrame('PING'), f])));
    assert.equal(err.kind, 'protocol', `byte ${at}=${value}`);
    assert.equal(err.offset, FRAME_HEADER_BYTES);
  }
});

test('end() inside a header or a payload is a truncated error; at a boundary it is fine', () => {
  const f = encodeFrame('DATA', Buffer.alloc(100, 7));
  const d1 = new FrameDecoder();
  d1.push(f.subarray(0, 5));
  assert.equal(catchError(() => d1.end()).kind, 'truncated');
  const d2 = new FrameDecoder();
  d2.push(f.subarray(0, 50));
  const err = catchError(() => d2.end());
  assert.equal(err.kind, 'truncated');
  assert.equal(err.frame, 'DATA');
  assert.equal(err.offset, 50);
  assert.equal(err.code, ErrorCode.Unavailable);
  assert.equal(err.retryable, true);
  const d3 = new FrameDecoder();
  d3.push(f);
  d3.end();
});

test('file names: plain names only', () => {
  assert.equal(fileNameProblem('pages-1.img'), null);
  assert.equal(fileNameProblem('a'.repeat(255)), null);
  for (const bad of [
    '',
    '.',
    '..',
    'a/b',
    '../x',
    '/etc',
    'a\0b',
    'a'.repeat(256),
    'é'.repeat(128),
  ]) {
    assert.notEqual(fileNameProblem(bad), null, JSON.stringify(bad));
  }
});
