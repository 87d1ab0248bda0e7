import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  ReqType,
  reqTypeName,
} from './rpc-schema.js';

test('a DUMP request encodes snake_case fields with CRIU field numbers', () => {
  const bytes = encodeRequest({
    type: ReqType.DUMP,
    opts: { images_dir_fd: -1, images_dir: '/proc/self/fd/4', pid: 42, leave_running: true },
  });
  // criu_req.type = field 1 varint (tag 0x08), value 1 = DUMP.
  assert.equal(bytes[0], 0x08);
  assert.equal(bytes[1], ReqType.DUMP);
  // criu_req.opts = field 2, length-delimited (tag 0x12).
  assert.equal(bytes[2], 0x12);
  const back = decodeRequest(bytes);
  assert.equal(back.opts?.pid, 42);
  assert.equal(back.opts?.leave_running, true);
  assert.equal(back.opts?.images_dir, '/proc/self/fd/4');
  // images_dir is field 68: tag (68 << 3 | 2) = 546 = varint 0xa2 0x04.
  const hex = Buffer.from(bytes).toString('hex');
  assert.ok(hex.includes('a2040f'), `field 68 with length 15 not found in ${hex}`);
});

test('a response with version, features and errors decodes', () => {
  const bytes = encodeResponse({
    type: ReqType.VERSION,
    success: true,
    version: { major_number: 4, minor_number: 2, sublevel: 1 },
    features: { lazy_pages: true, mem_track: false },
    cr_errmsg: 'rlimit noise',
  });
  const r = decodeResponse(bytes);
  assert.equal(r.success, true);
  assert.equal(r.version?.major_number, 4);
  assert.equal(r.version?.sublevel, 1);
  assert.equal(r.features?.lazy_pages, true);
  assert.equal(r.features?.mem_track, false);
  assert.equal(r.cr_errmsg, 'rlimit noise');
  assert.equal(r.restore, undefined);
});

test('missing required fields are refused before sending', () => {
  assert.throws(() => encodeRequest({ opts: { images_dir_fd: -1 } } as never), /type is required/);
  assert.throws(() => encodeRequest({ type: ReqType.DUMP, opts: {} } as never), /images_dir_fd/);
  assert.throws(
    () => encodeRequest({ type: ReqType.DUMP, opts: { images_dir_fd: -1, pid: 'x' } } as never),
    /pid/,
  );
});

test('request type names', () => {
  assert.equal(reqTypeName(ReqType.PAGE_SERVER), 'PAGE_SERVER');
  assert.equal(reqTypeName(99), 'TYPE_99');
});
